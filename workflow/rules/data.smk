# The embedded demo dataset and the labeled-set class histogram.

if config["dataset"]["name"] == "demo":

    rule build_demo:
        output:
            directory(DATA),
        log:
            f"{LOGS}/build_demo.log",
        benchmark:
            f"{LOGS}/build_demo.benchmark.tsv"
        threads: threads_of("build_demo")
        resources:
            **job_resources("build_demo"),
        params:
            opts=DEMO_OPTIONS,
        shell:
            "dars build-demo --options-json {params.opts:q} --out {output} > {log} 2>&1"


rule label_histogram:
    input:
        data=DATA,
        splits=split_files("labeled"),
    output:
        f"{RESULTS}/label_histogram.csv",
    log:
        f"{LOGS}/label_histogram.log",
    benchmark:
        f"{LOGS}/label_histogram.benchmark.tsv"
    threads: threads_of("label_histogram")
    resources:
        **job_resources("label_histogram"),
    params:
        opts=DATASET_OPTIONS,
    shell:
        "dars histogram --options-json {params.opts:q} --out {output} > {log} 2>&1"
