# Per round: the teacher's probabilities on the unlabeled pool, then DARS thresholding.
# With `shards: N > 1` thresholding is a map-reduce: N confidence_histogram jobs (pass 1 over
# contiguous image ranges), N pseudo_label_shard jobs that each sum all N histograms into the
# same thresholds and write their range's labels (pass 2), and pseudo_label merging them.


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
    threads: threads_of("infer_probabilities")
    resources:
        **job_resources("infer_probabilities"),
    conda:
        ENV
    shell:
        "python -m dars.gpu_slots --gpus {resources.gpu} --ddp --"
        " dars infer --config-json {params.cfg:q} --model {input.teacher} --out {output}"
        " --threads {threads} > {log} 2>&1"


# What the pseudo labels of round s depend on (the same in sharded and unsharded runs).
PSEUDO_PARAMS = dict(
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
)
PSEUDO_OPTIONS = (
    " --alpha {params.alpha} --method {params.method} --sampling {params.sampling}"
    " --temperature {params.temperature} --seed {params.seed} {params.threshold}"
    " {params.true_masks} --threads {threads}"
)


if SHARDS == 1:

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
            **PSEUDO_PARAMS,
        threads: threads_of("pseudo_label")
        resources:
            **job_resources("pseudo_label"),
        conda:
            ENV
        shell:
            "dars pseudo-label --store {input.store} --label-hist {input.histogram}"
            + PSEUDO_OPTIONS
            + " --labels-out {output.labels} --thresholds-out {output.thresholds}"
            " --stats-out {output.stats} --summary-out {output.summary} > {log} 2>&1"

else:
    SHARD_DIR = f"{RESULTS}/round{{s}}/shards"

    rule confidence_histogram:
        input:
            store=f"{RESULTS}/round{{s}}/probs.zarr",
        output:
            f"{SHARD_DIR}/confidence_{{i}}.npz",
        log:
            f"{LOGS}/round{{s}}/confidence_histogram_{{i}}.log",
        benchmark:
            f"{LOGS}/round{{s}}/confidence_histogram_{{i}}.benchmark.tsv"
        params:
            shards=SHARDS,
            temperature=config["pseudo_label"]["temperature"],
        threads: threads_of("confidence_histogram")
        resources:
            **job_resources("confidence_histogram"),
        conda:
            ENV
        shell:
            "dars confidence-histogram --store {input.store} --shard {wildcards.i}/{params.shards}"
            " --temperature {params.temperature} --threads {threads} --out {output} > {log} 2>&1"

    rule pseudo_label_shard:
        input:
            store=f"{RESULTS}/round{{s}}/probs.zarr",
            histogram=f"{RESULTS}/label_histogram.csv",
            parts=shard_files(f"{SHARD_DIR}/confidence_{{i}}.npz"),
        output:
            labels=directory(f"{SHARD_DIR}/labels_{{i}}"),
            thresholds=f"{SHARD_DIR}/thresholds_{{i}}.csv",
            stats=f"{SHARD_DIR}/pseudo_stats_{{i}}.csv",
            summary=f"{SHARD_DIR}/pseudo_summary_{{i}}.json",
        log:
            f"{LOGS}/round{{s}}/pseudo_label_shard_{{i}}.log",
        benchmark:
            f"{LOGS}/round{{s}}/pseudo_label_shard_{{i}}.benchmark.tsv"
        params:
            **PSEUDO_PARAMS,
            shards=SHARDS,
        threads: threads_of("pseudo_label_shard")
        resources:
            **job_resources("pseudo_label_shard"),
        conda:
            ENV
        shell:
            "dars pseudo-label --store {input.store} --label-hist {input.histogram}"
            " --conf-hist {input.parts} --shard {wildcards.i}/{params.shards}"
            + PSEUDO_OPTIONS
            + " --labels-out {output.labels} --thresholds-out {output.thresholds}"
            " --stats-out {output.stats} --summary-out {output.summary} > {log} 2>&1"

    rule pseudo_label:
        input:
            labels=shard_files(f"{SHARD_DIR}/labels_{{i}}"),
            thresholds=shard_files(f"{SHARD_DIR}/thresholds_{{i}}.csv"),
            stats=shard_files(f"{SHARD_DIR}/pseudo_stats_{{i}}.csv"),
            summaries=shard_files(f"{SHARD_DIR}/pseudo_summary_{{i}}.json"),
        output:
            labels=directory(f"{RESULTS}/round{{s}}/pseudo_labels"),
            thresholds=f"{RESULTS}/round{{s}}/thresholds.csv",
            stats=f"{RESULTS}/round{{s}}/pseudo_stats.csv",
            summary=f"{RESULTS}/round{{s}}/pseudo_summary.json",
        log:
            f"{LOGS}/round{{s}}/pseudo_label.log",
        benchmark:
            f"{LOGS}/round{{s}}/pseudo_label.benchmark.tsv"
        threads: threads_of("pseudo_label")
        resources:
            **job_resources("pseudo_label"),
        conda:
            ENV
        shell:
            "dars merge-pseudo-shards --labels {input.labels} --thresholds {input.thresholds}"
            " --stats {input.stats} --summaries {input.summaries}"
            " --labels-out {output.labels} --thresholds-out {output.thresholds}"
            " --stats-out {output.stats} --summary-out {output.summary} > {log} 2>&1"
