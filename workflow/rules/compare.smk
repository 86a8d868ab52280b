# The paper's ablation (Tables 4 and 5): `snakemake --cores all compare`.
# Every teacher and branch is a run of the same rules (dars.compare.runs: one baseline per seed
# of `compare.teacher_seeds`, the run's own seed being the main run; one branch per method and
# student seed on each teacher, starting from the teacher's model and thresholding its
# round-1 store). What is the comparison's own: the labeled-only control's pseudo labels, and
# the tables, handed every file they read.


rule blank_labels:
    input:
        store=lambda wc: RUNS.store(wc.run, wc.s),
        histogram=f"{RESULTS}/label_histogram.csv",
    output:
        labels=directory(f"{RUN_DIR}/round{{s}}/pseudo_labels"),
        stats=f"{RUN_DIR}/round{{s}}/pseudo_stats.csv",
        summary=f"{RUN_DIR}/round{{s}}/pseudo_summary.json",
    log:
        f"{RUN_LOGS}/round{{s}}/blank_labels.log",
    benchmark:
        f"{RUN_LOGS}/round{{s}}/blank_labels.benchmark.tsv"
    # the labeled-only control: the student round runs as every other, its pseudo half all
    # ignore (zero loss); the teacher's store only gives the unlabeled images and their sizes
    wildcard_constraints:
        run=RUNS.pattern(LABELED_ONLY),
    threads: threads_of("blank_labels")
    resources:
        **job_resources("blank_labels"),
    params:
        alpha=lambda wc: config["rounds"][int(wc.s) - 1]["alpha"],
    shell:
        "dars blank-labels --store {input.store} --label-hist {input.histogram}"
        " --alpha {params.alpha} --labels-out {output.labels} --stats-out {output.stats}"
        " --summary-out {output.summary} > {log} 2>&1"


COMPARISON = RUNS.comparison
# Fig. 3: the first teacher's round-1 store at T = 1 and, with a +ts row, at its T
FIRST_TEACHER = COMPARISON.teacher_seeds[0]
TEMPERED = COMPARISON.tempered
# What the report shows of the comparison, with the caption of each file.
REPORTED = {
    "tables.html": "compare_tables.rst",
    "class_distribution.png": "compare_distribution.rst",
    "iou.png": "compare_iou.rst",
    "confidence.png": "compare_confidence.rst",
}


rule compare_tables:
    input:
        histogram=f"{RESULTS}/label_histogram.csv",
        metrics=[f"{d}/metrics.json" for d in COMPARISON.folders],
        summaries=[
            f"{d}/pseudo_summary.json" for m, r, t, k, d in COMPARISON.runs() if r > 0
        ],
        store=RUNS.teacher_store(FIRST_TEACHER, tempered=False),
        tempered_store=(
            [RUNS.teacher_store(FIRST_TEACHER, tempered=True)] if TEMPERED else []
        ),
        temperature=(
            [f"{RUNS.round_dir(RUNS.teacher(FIRST_TEACHER), 0)}/temperature.json"]
            if TEMPERED and RUNS.tempered == "auto"
            else []
        ),
    output:
        **{
            name.replace(".", "_"): (
                report(
                    f"{RESULTS}/compare/{name}",
                    caption=f"../report/{REPORTED[name]}",
                    category="5. Method comparison",
                    labels={"figure": name},
                )
                if name in REPORTED
                else f"{RESULTS}/compare/{name}"
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
        comparison=COMPARISON.to_json(),
        out_dir=lambda wc, output: os.path.dirname(output.table4_csv),
        # Fig. 3's tempered curve, at the T of the tempered methods
        tempered=lambda wc, input: (
            f"--tempered-store {input.tempered_store}"
            f" --temperature {input.temperature or RUNS.tempered}"
            if TEMPERED
            else ""
        ),
    shell:
        "dars compare --comparison-json {params.comparison:q} --label-hist"
        " {input.histogram} --store {input.store} {params.tempered} --threads {threads}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule compare:
    input:
        rules.compare_tables.output,
    localrule: True
