# Round 0 (baseline on labeled data) and the student of each self-training round, of any run.
# `dars gpu-run` gives the job its own GPUs (and starts torchrun when gpus > 1).


rule train_baseline:
    input:
        data=DATA,
        # match_unlabeled makes a round-0 epoch as long as the unlabeled pool
        splits=split_files(
            "labeled",
            *(
                ["unlabeled"]
                if config["train"]["baseline_list"] == "match_unlabeled"
                else []
            ),
        ),
    output:
        model=f"{RUN_DIR}/round0/model.pt",
        log_csv=f"{RUN_DIR}/round0/train_log.csv",
    log:
        f"{RUN_LOGS}/round0/train.log",
    benchmark:
        f"{RUN_LOGS}/round0/train.benchmark.tsv"
    threads: threads_of("train_baseline")
    resources:
        **job_resources("train_baseline"),
    params:
        opts=lambda wc: train_options(wc.run, 0),
        state=f"{RUN_DIR}/round0/state",
    shell:
        "python -m dars.jobs.gpu_slots --gpus {resources.gpu} --ddp --"
        " dars train --round 0 --options-json {params.opts:q} --state-dir {params.state}"
        " --out {output.model} --log-csv {output.log_csv} --threads {threads}"
        " --workers {resources.workers} --tensorboard {resources.tensorboard} > {log} 2>&1"


rule train_student:
    input:
        data=DATA,
        splits=split_files("labeled", "unlabeled"),
        teacher=lambda wc: f"{previous_round(wc)}/model.pt",
        pseudo=f"{RUN_DIR}/round{{s}}/pseudo_labels",
    output:
        model=f"{RUN_DIR}/round{{s}}/model.pt",
        log_csv=f"{RUN_DIR}/round{{s}}/train_log.csv",
    log:
        f"{RUN_LOGS}/round{{s}}/train.log",
    benchmark:
        f"{RUN_LOGS}/round{{s}}/train.benchmark.tsv"
    threads: threads_of("train_student")
    resources:
        **job_resources("train_student"),
    params:
        opts=lambda wc: train_options(wc.run, wc.s),
        state=f"{RUN_DIR}/round{{s}}/state",
    shell:
        "python -m dars.jobs.gpu_slots --gpus {resources.gpu} --ddp --"
        " dars train --round {wildcards.s} --options-json {params.opts:q}"
        " --init {input.teacher} --pseudo {input.pseudo} --state-dir {params.state}"
        " --out {output.model} --log-csv {output.log_csv} --threads {threads}"
        " --workers {resources.workers} --tensorboard {resources.tensorboard} > {log} 2>&1"
