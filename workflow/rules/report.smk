# Figures and tables for `snakemake --report report.html` (captions in workflow/report/).


rule report:
    input:
        data=DATA,
        splits=split_files("unlabeled"),
        summary=f"{RESULTS}/summary.csv",
        histogram=f"{RESULTS}/label_histogram.csv",
        metrics=expand(f"{RESULTS}/round{{r}}/metrics.csv", r=ALL_ROUNDS),
        train_logs=expand(f"{RESULTS}/round{{r}}/train_log.csv", r=ALL_ROUNDS),
        stores=expand(f"{RESULTS}/round{{s}}/probs.zarr", s=STUDENT_ROUNDS),
        labels=expand(f"{RESULTS}/round{{s}}/pseudo_labels", s=STUDENT_ROUNDS),
        thresholds=expand(f"{RESULTS}/round{{s}}/thresholds.csv", s=STUDENT_ROUNDS),
        stats=expand(f"{RESULTS}/round{{s}}/pseudo_stats.csv", s=STUDENT_ROUNDS),
    output:
        config=report_outputs(
            "config", "../report/config.rst", "1. Run", labels="configuration"
        ),
        metrics=report_outputs(
            "metrics",
            "../report/metrics.rst",
            "2. Metrics",
            labels="mIoU and per-class IoU",
        ),
        iou=report_outputs(
            "iou", "../report/iou.rst", "2. Metrics", labels="per-class IoU plot"
        ),
        training=report_outputs(
            "training", "../report/training.rst", "3. Training", labels="loss and lr"
        ),
        distribution=report_outputs(
            "distribution",
            "../report/class_distribution.rst",
            "4. Pseudo labels",
            "round {s}",
            labels="class distribution",
        ),
        thresholds=report_outputs(
            "thresholds",
            "../report/thresholds.rst",
            "4. Pseudo labels",
            "round {s}",
            labels="thresholds",
        ),
        examples=report_outputs(
            "examples",
            "../report/examples.rst",
            "4. Pseudo labels",
            "round {s}",
            labels="examples",
        ),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{LOGS}/report.benchmark.tsv"
    threads: threads_of("report")
    resources:
        **job_resources("report"),
    params:
        # a function: config values such as dataset.image_pattern hold {field} placeholders,
        # which Snakemake would take for wildcards in a plain params string
        opts=lambda wc: ReportOptions.from_config(config).to_json(),
        rounds=len(STUDENT_ROUNDS),
        run_dir=lambda wc, input: os.path.dirname(input.summary),
        out_dir=lambda wc, output: os.path.dirname(output.config[0]),
    shell:
        "dars report --options-json {params.opts:q} --run-dir {params.run_dir}"
        " --rounds {params.rounds} --out-dir {params.out_dir} > {log} 2>&1"
