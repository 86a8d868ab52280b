# Per round: the teacher's probabilities on the unlabeled pool, then DARS thresholding.
# Temperature scaling happens in inference: with `pseudo_label.temperature: auto` the teacher is
# calibrated first (rule calibrate) and its temperature.json is an input of inference, so the
# store (confidence = max softmax(logits / T)) depends on T; thresholding only checks it.
# With `shards: N > 1` inference is spread over N contiguous image ranges: infer_init creates
# the (unfinished) store, N infer_probabilities_shard jobs each write their range's images into
# it, and infer_finalize checks that it is whole and moves it to probs.zarr -- the same store,
# bit for bit, as the unsharded job writes. Thresholding is one job per round whatever N: it
# sums the store's per-chunk histograms (inference counted them) and writes every label.

PSEUDO_TEMPERATURE = calibration_file(
    config["pseudo_label"]["temperature"], lambda wc: f"{RESULTS}/round{int(wc.s) - 1}"
)
INFER_INPUT = dict(
    data=DATA,
    splits=split_files("unlabeled"),
    teacher=lambda wc: f"{RESULTS}/round{int(wc.s) - 1}/model.pt",
    temperature=PSEUDO_TEMPERATURE,
)


rule infer_probabilities:
    input:
        **INFER_INPUT,
    output:
        directory(f"{RESULTS}/round{{s}}/probs.zarr"),
    log:
        f"{LOGS}/round{{s}}/infer.log",
    benchmark:
        f"{LOGS}/round{{s}}/infer.benchmark.tsv"
    threads: threads_of("infer_probabilities")
    resources:
        **job_resources("infer_probabilities"),
    params:
        opts=INFER_OPTIONS,
        temperature=infer_temperature,
    shell:
        "python -m dars.jobs.gpu_slots --gpus {resources.gpu} --ddp --"
        " dars infer --options-json {params.opts:q} --model {input.teacher} --out {output}"
        " --temperature {params.temperature} --threads {threads} > {log} 2>&1"


if SHARDS > 1:

    # infer_probabilities stays defined (other rules derive from it with `use rule`); the
    # main run's store comes from the shards.
    ruleorder: infer_finalize > infer_probabilities

    # The steps are marked done by temporary files: once probs.zarr exists they are deleted, so
    # a removed or forced probs.zarr reruns all three steps, never a finalize with no store.
    INFER_DONE = f"{RESULTS}/round{{s}}/shards/infer"
    # `dars infer` with what all three steps share; they build probs.zarr.partial next to it.
    INFER_SHELL = (
        "dars infer --options-json {params.opts:q} --model {input.teacher}"
        " --out {params.store} --temperature {params.temperature} --threads {threads}"
    )
    INFER_STORE_PARAMS = dict(
        opts=INFER_OPTIONS,
        temperature=infer_temperature,
        store=lambda wc: f"{RESULTS}/round{wc.s}/probs.zarr",
    )

    rule infer_init:
        input:
            **INFER_INPUT,
        output:
            temp(touch(f"{INFER_DONE}_init.done")),
        log:
            f"{LOGS}/round{{s}}/infer_init.log",
        benchmark:
            f"{LOGS}/round{{s}}/infer_init.benchmark.tsv"
        threads: threads_of("infer_init")
        resources:
            **job_resources("infer_init"),
        params:
            **INFER_STORE_PARAMS,
        shell:
            f"{INFER_SHELL} --init-store > {{log}} 2>&1"

    rule infer_probabilities_shard:
        input:
            **INFER_INPUT,
            store=rules.infer_init.output,
        output:
            temp(touch(f"{INFER_DONE}_{{i}}.done")),
        log:
            f"{LOGS}/round{{s}}/infer_{{i}}.log",
        benchmark:
            f"{LOGS}/round{{s}}/infer_{{i}}.benchmark.tsv"
        threads: threads_of("infer_probabilities_shard")
        resources:
            **job_resources("infer_probabilities_shard"),
        params:
            **INFER_STORE_PARAMS,
            shards=SHARDS,
        shell:
            f"python -m dars.jobs.gpu_slots --gpus {{resources.gpu}} --ddp -- {INFER_SHELL}"
            " --shard {wildcards.i}/{params.shards} > {log} 2>&1"

    rule infer_finalize:
        input:
            **INFER_INPUT,
            shards=shard_files(f"{INFER_DONE}_{{i}}.done"),
        output:
            directory(f"{RESULTS}/round{{s}}/probs.zarr"),
        log:
            f"{LOGS}/round{{s}}/infer_finalize.log",
        benchmark:
            f"{LOGS}/round{{s}}/infer_finalize.benchmark.tsv"
        threads: threads_of("infer_finalize")
        resources:
            **job_resources("infer_finalize"),
        params:
            **INFER_STORE_PARAMS,
        shell:
            f"{INFER_SHELL} --finalize > {{log}} 2>&1"


# The main run's thresholding of round s.
PSEUDO_PARAMS = pseudo_params(
    config["pseudo_label"]["method"],
    config["pseudo_label"]["temperature"],
    config["pseudo_label"]["seed"],
)
# The thresholding job's command (also the comparison branches').
PSEUDO_LABEL_SHELL = (
    "dars pseudo-label --options-json {params.opts:q} --store {input.store}"
    " --label-hist {input.histogram} --temperature {params.temperature}"
    " --dataset-json {params.dataset:q} --threads {threads} --labels-out {output.labels}"
    " --thresholds-out {output.thresholds} --stats-out {output.stats}"
    " --summary-out {output.summary} > {log} 2>&1"
)


rule pseudo_label:
    input:
        store=f"{RESULTS}/round{{s}}/probs.zarr",
        histogram=f"{RESULTS}/label_histogram.csv",
        splits=split_files("unlabeled"),  # masks it lists give the precision
        temperature=PSEUDO_TEMPERATURE,
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
    params:
        **PSEUDO_PARAMS,
    shell:
        PSEUDO_LABEL_SHELL
