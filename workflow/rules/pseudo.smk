# Per round of any run: the teacher's probabilities on the unlabeled pool, then thresholding.
# Temperature scaling happens in inference: with temperature "auto" the teacher is calibrated
# first (rule calibrate) and its temperature.json is an input of inference, so the store
# (confidence = max softmax(logits / T)) depends on T; thresholding only checks it. A round's
# store is probs{at}.zarr (dars.compare.runs.store_name): at the run's own T, or -- a
# teacher's round-1 store for the comparison -- at T = 1 (_t1) or compare.temperature (_ts).
# With `shards: N > 1` inference is spread over N contiguous image ranges: infer_init creates
# the (unfinished) store, N infer_probabilities_shard jobs each write their range's images into
# it, and infer_finalize checks that it is whole and moves it into place -- the same store,
# bit for bit, as the unsharded job writes. Thresholding is one job per round whatever N: it
# sums the store's per-chunk histograms (inference counted them) and writes every label.


STORE = f"{RUN_DIR}/round{{s}}/{store_name('{at}')}"
INFER_INPUT = dict(
    data=DATA,
    splits=split_files("unlabeled"),
    teacher=lambda wc: f"{previous_round(wc)}/model.pt",
    temperature=calibration_file(store_temperature),
)
INFER_PARAMS = dict(
    opts=INFER_OPTIONS, temperature=temperature_param(store_temperature)
)


rule infer_probabilities:
    input:
        **INFER_INPUT,
    output:
        directory(STORE),
    log:
        f"{RUN_LOGS}/round{{s}}/infer{{at}}.log",
    benchmark:
        f"{RUN_LOGS}/round{{s}}/infer{{at}}.benchmark.tsv"
    threads: threads_of("infer_probabilities")
    resources:
        **job_resources("infer_probabilities"),
    params:
        **INFER_PARAMS,
    shell:
        "python -m dars.jobs.gpu_slots --gpus {resources.gpu} --ddp --"
        " dars infer --options-json {params.opts:q} --model {input.teacher} --out {output}"
        " --temperature {params.temperature} --threads {threads} > {log} 2>&1"


if SHARDS > 1:

    ruleorder: infer_finalize > infer_probabilities

    # The steps are marked done by temporary files: once the store exists they are deleted, so
    # a removed or forced store reruns all three steps, never a finalize with no store.
    INFER_DONE = f"{RUN_DIR}/round{{s}}/shards/infer{{at}}"
    # `dars infer` with what all three steps share; they build the store's .partial next to it.
    INFER_SHELL = (
        "dars infer --options-json {params.opts:q} --model {input.teacher}"
        " --out {params.store} --temperature {params.temperature} --threads {threads}"
    )
    SHARD_PARAMS = dict(
        **INFER_PARAMS, store=lambda wc: STORE.format(run=wc.run, s=wc.s, at=wc.at)
    )

    rule infer_init:
        input:
            **INFER_INPUT,
        output:
            temp(touch(f"{INFER_DONE}_init.done")),
        log:
            f"{RUN_LOGS}/round{{s}}/infer{{at}}_init.log",
        benchmark:
            f"{RUN_LOGS}/round{{s}}/infer{{at}}_init.benchmark.tsv"
        threads: threads_of("infer_init")
        resources:
            **job_resources("infer_init"),
        params:
            **SHARD_PARAMS,
        shell:
            f"{INFER_SHELL} --init-store > {{log}} 2>&1"

    rule infer_probabilities_shard:
        input:
            **INFER_INPUT,
            store=rules.infer_init.output,
        output:
            temp(touch(f"{INFER_DONE}_{{i}}.done")),
        log:
            f"{RUN_LOGS}/round{{s}}/infer{{at}}_{{i}}.log",
        benchmark:
            f"{RUN_LOGS}/round{{s}}/infer{{at}}_{{i}}.benchmark.tsv"
        threads: threads_of("infer_probabilities_shard")
        resources:
            **job_resources("infer_probabilities_shard"),
        params:
            **SHARD_PARAMS,
            shards=SHARDS,
        shell:
            f"python -m dars.jobs.gpu_slots --gpus {{resources.gpu}} --ddp -- {INFER_SHELL}"
            " --shard {wildcards.i}/{params.shards} > {log} 2>&1"

    rule infer_finalize:
        input:
            **INFER_INPUT,
            shards=shard_files(f"{INFER_DONE}_{{i}}.done"),
        output:
            directory(STORE),
        log:
            f"{RUN_LOGS}/round{{s}}/infer{{at}}_finalize.log",
        benchmark:
            f"{RUN_LOGS}/round{{s}}/infer{{at}}_finalize.benchmark.tsv"
        threads: threads_of("infer_finalize")
        resources:
            **job_resources("infer_finalize"),
        params:
            **SHARD_PARAMS,
        shell:
            f"{INFER_SHELL} --finalize > {{log}} 2>&1"


rule pseudo_label:
    input:
        store=lambda wc: RUNS.store(wc.run, wc.s),
        histogram=f"{RESULTS}/label_histogram.csv",
        splits=split_files("unlabeled"),  # masks it lists give the precision
        temperature=calibration_file(run_temperature),
    output:
        labels=directory(f"{RUN_DIR}/round{{s}}/pseudo_labels"),
        thresholds=f"{RUN_DIR}/round{{s}}/thresholds.csv",
        stats=f"{RUN_DIR}/round{{s}}/pseudo_stats.csv",
        summary=f"{RUN_DIR}/round{{s}}/pseudo_summary.json",
    log:
        f"{RUN_LOGS}/round{{s}}/pseudo_label.log",
    benchmark:
        f"{RUN_LOGS}/round{{s}}/pseudo_label.benchmark.tsv"
    wildcard_constraints:
        run=RUNS.pattern(LABELED_ONLY, exclude=True),
    threads: threads_of("pseudo_label")
    resources:
        **job_resources("pseudo_label"),
    params:
        opts=pseudo_options,
        temperature=temperature_param(run_temperature),
        # precision against the unlabeled split's masks, where it lists them (never trained on)
        dataset=DATASET_OPTIONS,
    shell:
        "dars pseudo-label --options-json {params.opts:q} --store {input.store}"
        " --label-hist {input.histogram} --temperature {params.temperature}"
        " --dataset-json {params.dataset:q} --threads {threads} --labels-out {output.labels}"
        " --thresholds-out {output.thresholds} --stats-out {output.stats}"
        " --summary-out {output.summary} > {log} 2>&1"
