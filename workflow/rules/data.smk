# The embedded demo dataset and the labeled-set class histogram.

if config["dataset"]["name"] == "demo":

    rule build_demo:
        output:
            directory(DATA),
        log:
            f"{LOGS}/build_demo.log",
        params:
            cfg=subset("demo"),
        shell:
            "dars build-demo --config-json {params.cfg:q} --out {output} > {log} 2>&1"


rule label_histogram:
    input:
        DATA,
    output:
        f"{RESULTS}/label_histogram.csv",
    log:
        f"{LOGS}/label_histogram.log",
    params:
        cfg=subset("dataset"),
    shell:
        "dars histogram --config-json {params.cfg:q} --out {output} > {log} 2>&1"
