# The paper's ablation (Tables 4 and 5): `snakemake --cores all compare`.
# One teacher per seed of `compare.teacher_seeds` (default: the run's seed). The teacher whose
# seed is the run's `seed` is the run's own baseline and round-1 store (the same training:
# reused, never redone); any other is trained, inferred and (for +ts) calibrated under
# results/<run>/compare/teacher<t>/. Every method of `compare.methods` thresholds its
# teacher's round-1 store, then trains its own student per student seed under
# results/<run>/compare/teacher<t>/<method>/seed<k>/round1/; `labeled-only` (the control)
# writes all-ignore labels instead (`dars blank-labels`). Methods of `compare.progressive` go
# on for every configured round, inferring with their own students. The rules reuse the main
# rules' commands (`use rule`), only their paths differ; paths and helpers are in common.smk.


wildcard_constraints:
    t=r"\d+",


# ---- the teachers of the other seeds


use rule train_baseline as compare_train_baseline with:
    output:
        model=f"{TEACHER}/round0/model.pt",
        log_csv=f"{TEACHER}/round0/train_log.csv",
    log:
        f"{TEACHER_LOGS}/round0/train.log",
    benchmark:
        f"{TEACHER_LOGS}/round0/train.benchmark.tsv"
    params:
        opts=lambda wc: train_options(0, seed=wc.t),
        state=f"{TEACHER}/round0/state",


use rule infer_probabilities as compare_teacher_infer with:
    input:
        data=DATA,
        splits=split_files("unlabeled"),
        teacher=f"{TEACHER}/round0/model.pt",
    output:
        directory(f"{TEACHER}/round1/probs.zarr"),
    log:
        f"{TEACHER_LOGS}/round1/infer.log",
    benchmark:
        f"{TEACHER_LOGS}/round1/infer.benchmark.tsv"
    params:
        opts=INFER_OPTIONS,
        temperature=1.0,  # the untempered store (tempered rows read compare_infer_tempered)


# ---- a teacher's round-1 stores at the other temperatures (inference applies T)

TEMPERED_T = COMPARE["temperature"]


use rule infer_probabilities as compare_infer_tempered with:
    input:
        data=DATA,
        splits=split_files("unlabeled"),
        teacher=lambda wc: f"{teacher_root(wc.t)}/round0/model.pt",
        temperature=calibration_file(
            TEMPERED_T, lambda wc: f"{teacher_root(wc.t)}/round0"
        ),
    output:
        directory(f"{TEACHER}/round1/{TEMPERED_STORE}"),
    log:
        f"{TEACHER_LOGS}/round1/infer_ts.log",
    benchmark:
        f"{TEACHER_LOGS}/round1/infer_ts.benchmark.tsv"
    params:
        opts=INFER_OPTIONS,
        temperature=temperature_param(TEMPERED_T),


use rule infer_probabilities as compare_infer_run_t1 with:
    # only when the run itself scales temperature: its untempered rows need a store at T = 1
    input:
        data=DATA,
        splits=split_files("unlabeled"),
        teacher=f"{RESULTS}/round0/model.pt",
    output:
        directory(f"{RESULTS}/round1/{RUN_T1_STORE}"),
    log:
        f"{LOGS}/compare/round1/infer_t1.log",
    benchmark:
        f"{LOGS}/compare/round1/infer_t1.benchmark.tsv"
    params:
        opts=INFER_OPTIONS,
        temperature=1.0,


use rule evaluate as compare_teacher_evaluate with:
    input:
        data=DATA,
        splits=split_files("val"),
        model=f"{TEACHER}/round{{r}}/model.pt",
    output:
        metrics=f"{TEACHER}/round{{r}}/metrics.csv",
        summary=f"{TEACHER}/round{{r}}/metrics.json",
    log:
        f"{TEACHER_LOGS}/round{{r}}/evaluate.log",
    benchmark:
        f"{TEACHER_LOGS}/round{{r}}/evaluate.benchmark.tsv"


use rule calibrate as compare_teacher_calibrate with:
    input:
        data=DATA,
        splits=split_files(config["pseudo_label"]["calibration_split"]),
        model=f"{TEACHER}/round{{r}}/model.pt",
    output:
        f"{TEACHER}/round{{r}}/temperature.json",
    log:
        f"{TEACHER_LOGS}/round{{r}}/calibrate.log",
    benchmark:
        f"{TEACHER_LOGS}/round{{r}}/calibrate.benchmark.tsv"


# ---- the branches: pseudo labels (or none), student, and what progressive rounds need


rule compare_pseudo_label:
    input:
        store=branch_store,
        histogram=f"{RESULTS}/label_histogram.csv",
        splits=split_files("unlabeled"),  # masks it lists give the precision
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
    wildcard_constraints:
        v=THRESHOLDED.pattern,
    threads: threads_of("pseudo_label")
    resources:
        **job_resources("pseudo_label"),
    params:
        **pseudo_params(
            lambda wc: parse_variant(wc.v).method,
            branch_temperature,
            lambda wc: int(wc.k),
            branch_alpha,
        ),
    shell:
        PSEUDO_LABEL_SHELL


rule compare_blank_labels:
    input:
        store=teacher_store,
        histogram=f"{RESULTS}/label_histogram.csv",
    output:
        labels=directory(f"{BRANCH}/round{{s}}/pseudo_labels"),
        stats=f"{BRANCH}/round{{s}}/pseudo_stats.csv",
        summary=f"{BRANCH}/round{{s}}/pseudo_summary.json",
    log:
        f"{CMP_LOGS}/round{{s}}/blank_labels.log",
    benchmark:
        f"{CMP_LOGS}/round{{s}}/blank_labels.benchmark.tsv"
    # the labeled-only control: the student round runs as every other, its pseudo half all
    # ignore (zero loss); the teacher's store only gives the unlabeled images and their sizes
    wildcard_constraints:
        v=LABELED_ONLY,
    threads: threads_of("pseudo_label")
    resources:
        **job_resources("pseudo_label"),
    params:
        alpha=round_alpha,
    shell:
        "dars blank-labels --store {input.store} --label-hist {input.histogram}"
        " --alpha {params.alpha} --labels-out {output.labels} --stats-out {output.stats}"
        " --summary-out {output.summary} > {log} 2>&1"


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
        # student seed k seeds the student (and, above, the sampling); teacher t its init
        opts=lambda wc: train_options(wc.s, seed=wc.k),
        state=f"{BRANCH}/round{{s}}/state",


use rule infer_probabilities as compare_infer_probabilities with:
    # a progressive branch's later round, at the branch's temperature
    input:
        data=DATA,
        splits=split_files("unlabeled"),
        teacher=lambda wc: f"{branch_round(wc, int(wc.s) - 1)}/model.pt",
        temperature=calibration_file(
            branch_temperature, lambda wc: branch_round(wc, int(wc.s) - 1)
        ),
    output:
        directory(f"{BRANCH}/round{{s}}/probs.zarr"),
    log:
        f"{CMP_LOGS}/round{{s}}/infer.log",
    benchmark:
        f"{CMP_LOGS}/round{{s}}/infer.benchmark.tsv"
    params:
        opts=INFER_OPTIONS,
        temperature=temperature_param(branch_temperature),


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
        baselines=[f"{teacher_root(t)}/round0/metrics.json" for t in TEACHER_SEEDS],
        histogram=f"{RESULTS}/label_histogram.csv",
        # Fig. 3 shows the first teacher's confidences, at T = 1 and (+ts) at its T
        store=str(round1_store(RESULTS, TEACHER_SEEDS[0], SEED, False, RUN_AT_T1)),
        tempered_store=(
            [str(round1_store(RESULTS, TEACHER_SEEDS[0], SEED, True))]
            if CMP_TEMPERED
            else []
        ),
        metrics=compare_inputs("metrics.json"),
        summaries=compare_inputs("pseudo_summary.json"),
        temperature=calibration_file(
            COMPARE["temperature"] if CMP_TEMPERED else 1.0,
            f"{teacher_root(TEACHER_SEEDS[0])}/round0",
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
    threads: threads_of("compare_tables")
    resources:
        **job_resources("compare_tables"),
    params:
        methods=COMPARE["methods"],
        progressive=COMPARE["progressive"],
        seeds=COMPARE["seeds"],
        teacher_seeds=TEACHER_SEEDS,
        run_seed=SEED,
        rounds=len(STUDENT_ROUNDS),
        run_dir=lambda wc, input: os.path.dirname(input.histogram),
        out_dir=lambda wc, output: os.path.dirname(output.table4_csv),
        # T of the tempered methods, for the confidence plot (the tables read each summary)
        temperature=lambda wc, input: (
            f"--temperature {input.temperature or COMPARE['temperature']}"
            if CMP_TEMPERED
            else ""
        ),
    shell:
        "dars compare --run-dir {params.run_dir} --methods {params.methods} --progressive"
        " {params.progressive} --seeds {params.seeds} --teacher-seeds {params.teacher_seeds}"
        " --run-seed {params.run_seed} --rounds {params.rounds}"
        " {params.temperature} --threads {threads} --out-dir {params.out_dir} > {log} 2>&1"


rule compare:
    input:
        rules.compare_tables.output,
    localrule: True
