# Per round: the teacher's probabilities on the unlabeled pool, then DARS thresholding.


rule infer_probabilities:
    input:
        data=DATA,
        teacher=lambda wc: f"{RESULTS}/round{int(wc.s) - 1}/model.pt",
    output:
        directory(f"{RESULTS}/round{{s}}/probs.zarr"),
    log:
        f"{LOGS}/round{{s}}/infer.log",
    benchmark:
        f"{LOGS}/round{{s}}/infer.benchmark.tsv"
    params:
        cfg=subset("dataset", "infer"),
    threads: workflow.cores
    shell:
        "dars infer --config-json {params.cfg:q} --model {input.teacher} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule pseudo_label:
    input:
        store=f"{RESULTS}/round{{s}}/probs.zarr",
        histogram=f"{RESULTS}/label_histogram.csv",
    output:
        labels=directory(f"{RESULTS}/round{{s}}/pseudo_labels"),
        thresholds=f"{RESULTS}/round{{s}}/thresholds.csv",
        stats=f"{RESULTS}/round{{s}}/pseudo_stats.csv",
        summary=f"{RESULTS}/round{{s}}/pseudo_summary.json",
    log:
        f"{LOGS}/round{{s}}/pseudo_label.log",
    benchmark:
        f"{LOGS}/round{{s}}/pseudo_label.benchmark.tsv"
    params:
        alpha=lambda wc: round_cfg(wc.s)["alpha"],
        method=config["pseudo_label"]["method"],
        sampling=config["pseudo_label"]["sampling"],
        temperature=config["pseudo_label"]["temperature"],
        seed=config["pseudo_label"]["seed"],
        threshold=(
            f"--threshold {config['pseudo_label']['threshold']}"
            if config["pseudo_label"]["threshold"] is not None
            else ""
        ),
        # The demo's unlabeled images keep their true masks: report pseudo-label precision.
        true_masks=f"--true-masks {DATA}/masks" if config["dataset"]["name"] == "demo" else "",
    shell:
        "dars pseudo-label --store {input.store} --label-hist {input.histogram}"
        " --alpha {params.alpha} --method {params.method} --sampling {params.sampling}"
        " --temperature {params.temperature} --seed {params.seed} {params.threshold}"
        " {params.true_masks}"
        " --labels-out {output.labels} --thresholds-out {output.thresholds}"
        " --stats-out {output.stats} --summary-out {output.summary} > {log} 2>&1"
