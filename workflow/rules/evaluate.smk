# Validation metrics (and, for `temperature: auto`, the temperature) of every round of any
# run, and the main run's summary table.


rule evaluate:
    input:
        data=DATA,
        splits=split_files("val"),
        model=f"{RUN_DIR}/round{{r}}/model.pt",
    output:
        metrics=f"{RUN_DIR}/round{{r}}/metrics.csv",
        summary=f"{RUN_DIR}/round{{r}}/metrics.json",
    log:
        f"{RUN_LOGS}/round{{r}}/evaluate.log",
    benchmark:
        f"{RUN_LOGS}/round{{r}}/evaluate.benchmark.tsv"
    threads: threads_of("evaluate")
    resources:
        **job_resources("evaluate"),
    params:
        opts=EVALUATE_OPTIONS,
    shell:
        "python -m dars.jobs.gpu_slots --gpus {resources.gpu} --"
        " dars evaluate --options-json {params.opts:q} --model {input.model} --round {wildcards.r}"
        " --metrics {output.metrics} --summary {output.summary} --threads {threads} > {log} 2>&1"


rule summary:
    input:
        metrics=expand(f"{RESULTS}/round{{r}}/metrics.json", r=ALL_ROUNDS),
        pseudo=expand(f"{RESULTS}/round{{s}}/pseudo_summary.json", s=STUDENT_ROUNDS),
    output:
        f"{RESULTS}/summary.csv",
    log:
        f"{LOGS}/summary.log",
    benchmark:
        f"{LOGS}/summary.benchmark.tsv"
    threads: threads_of("summary")
    resources:
        **job_resources("summary"),
    shell:
        "dars summary --metrics {input.metrics} --pseudo-summaries {input.pseudo}"
        " --out {output} > {log} 2>&1"


rule calibrate:
    # The temperature of round r's model for `temperature: auto` (paper §4.3: T fitted by NLL).
    input:
        data=DATA,
        splits=split_files(config["pseudo_label"]["calibration_split"]),
        model=f"{RUN_DIR}/round{{r}}/model.pt",
    output:
        f"{RUN_DIR}/round{{r}}/temperature.json",
    log:
        f"{RUN_LOGS}/round{{r}}/calibrate.log",
    benchmark:
        f"{RUN_LOGS}/round{{r}}/calibrate.benchmark.tsv"
    threads: threads_of("calibrate")
    resources:
        **job_resources("calibrate"),
    params:
        opts=CALIBRATE_OPTIONS,
    shell:
        "python -m dars.jobs.gpu_slots --gpus {resources.gpu} --"
        " dars calibrate --options-json {params.opts:q} --model {input.model}"
        " --out {output} --threads {threads} > {log} 2>&1"
