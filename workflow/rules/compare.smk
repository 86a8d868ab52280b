# The paper's ablation (Tables 4 and 5): `snakemake --cores all compare`.
# Every method of `compare.methods` thresholds the run's one round-1 store (the baseline's
# probabilities: trained and inferred once, whatever the number of methods), then trains its
# own student per seed under results/<run>/compare/<method>/seed<k>/round1/. Methods of
# `compare.progressive` go on for every configured round, inferring with their own students.
# The branch rules reuse the main rules' commands (`use rule`), only their paths differ;
# the paths and helpers are in common.smk.

rule compare_pseudo_label:
    input:
        store=branch_store,
        histogram=f"{RESULTS}/label_histogram.csv",
        temperature=calibration_file(
            branch_temperature, lambda wc: branch_round(wc, int(wc.s) - 1)
        ),
    output:
        labels=directory(f"{BRANCH}/round{{s}}/pseudo_labels"),
        thresholds=f"{BRANCH}/round{{s}}/thresholds.csv",
        stats=f"{BRANCH}/round{{s}}/pseudo_stats.csv",
        summary=f"{BRANCH}/round{{s}}/pseudo_summary.json",
    log:
        f"{CMP_LOGS}/round{{s}}/pseudo_label.log",
    benchmark:
        f"{CMP_LOGS}/round{{s}}/pseudo_label.benchmark.tsv"
    params:
        **pseudo_params(
            lambda wc: parse_variant(wc.v).method, branch_temperature, lambda wc: int(wc.k)
        ),
    threads: threads_of("pseudo_label")
    resources:
        **job_resources("pseudo_label"),
    conda:
        ENV
    shell:
        PSEUDO_LABEL_SHELL


use rule train_student as compare_train_student with:
    input:
        data=DATA,
        splits=split_files("labeled", "unlabeled"),
        teacher=lambda wc: f"{branch_round(wc, int(wc.s) - 1)}/model.pt",
        pseudo=f"{BRANCH}/round{{s}}/pseudo_labels",
    output:
        model=f"{BRANCH}/round{{s}}/model.pt",
        log_csv=f"{BRANCH}/round{{s}}/train_log.csv",
    log:
        f"{CMP_LOGS}/round{{s}}/train.log",
    benchmark:
        f"{CMP_LOGS}/round{{s}}/train.benchmark.tsv"
    params:
        # seed k of the comparison seeds the student (and, above, the sampling)
        cfg=lambda wc: subset("dataset", "model", "train", seed=int(wc.k)),
        epochs=lambda wc: epochs_per_round(wc.s),
        scale=lambda wc: scale(wc.s),
        state=f"{BRANCH}/round{{s}}/state",


use rule infer_probabilities as compare_infer_probabilities with:
    input:
        data=DATA,
        splits=split_files("unlabeled"),
        teacher=lambda wc: f"{branch_round(wc, int(wc.s) - 1)}/model.pt",
    output:
        directory(f"{BRANCH}/round{{s}}/probs.zarr"),
    log:
        f"{CMP_LOGS}/round{{s}}/infer.log",
    benchmark:
        f"{CMP_LOGS}/round{{s}}/infer.benchmark.tsv"


use rule evaluate as compare_evaluate with:
    input:
        data=DATA,
        splits=split_files("val"),
        model=f"{BRANCH}/round{{r}}/model.pt",
    output:
        metrics=f"{BRANCH}/round{{r}}/metrics.csv",
        summary=f"{BRANCH}/round{{r}}/metrics.json",
    log:
        f"{CMP_LOGS}/round{{r}}/evaluate.log",
    benchmark:
        f"{CMP_LOGS}/round{{r}}/evaluate.benchmark.tsv"


use rule calibrate as compare_calibrate with:
    input:
        data=DATA,
        splits=split_files(config["pseudo_label"]["calibration_split"]),
        model=f"{BRANCH}/round{{r}}/model.pt",
    output:
        f"{BRANCH}/round{{r}}/temperature.json",
    log:
        f"{CMP_LOGS}/round{{r}}/calibrate.log",
    benchmark:
        f"{CMP_LOGS}/round{{r}}/calibrate.benchmark.tsv"


rule compare_tables:
    input:
        baseline=f"{RESULTS}/round0/metrics.json",
        histogram=f"{RESULTS}/label_histogram.csv",
        store=f"{RESULTS}/round1/probs.zarr",
        metrics=compare_inputs("metrics.json"),
        summaries=compare_inputs("pseudo_summary.json"),
        temperature=calibration_file(
            COMPARE["temperature"] if CMP_TEMPERED else 1.0, f"{RESULTS}/round0"
        ),
    output:
        **{
            name.replace(".", "_"): (
                report(
                    f"{CMP}/{name}",
                    caption=f"../report/{CMP_REPORTED[name]}",
                    category="5. Method comparison",
                    labels={"figure": name},
                )
                if name in CMP_REPORTED
                else f"{CMP}/{name}"
            )
            for name in COMPARE_FILES
        },
    log:
        f"{LOGS}/compare/tables.log",
    benchmark:
        f"{LOGS}/compare/tables.benchmark.tsv"
    params:
        methods=COMPARE["methods"],
        progressive=COMPARE["progressive"],
        seeds=COMPARE["seeds"],
        rounds=len(STUDENT_ROUNDS),
        run_dir=lambda wc, input: os.path.dirname(input.histogram),
        out_dir=lambda wc, output: os.path.dirname(output.table4_csv),
        # T of the tempered methods, for the confidence plot (the tables read each summary)
        temperature=lambda wc, input: (
            f"--temperature {input.temperature or COMPARE['temperature']}"
            if CMP_TEMPERED
            else ""
        ),
    threads: threads_of("compare_tables")
    resources:
        **job_resources("compare_tables"),
    conda:
        ENV
    shell:
        "dars compare --run-dir {params.run_dir} --methods {params.methods} --progressive"
        " {params.progressive} --seeds {params.seeds} --rounds {params.rounds}"
        " {params.temperature} --threads {threads} --out-dir {params.out_dir} > {log} 2>&1"


rule compare:
    localrule: True
    input:
        rules.compare_tables.output,
