# One training run per (dataset, variant, seed). Only the `done` marker is declared: last.pt and
# train_log.csv must survive a killed job, so that re-running it (--rerun-incomplete) resumes from
# the checkpoint instead of Snakemake deleting it as an incomplete output.


rule train:
    input:
        data=data_path,
        configs=train_configs,
        genotype=train_genotype,
    output:
        done=f"{RUN}/{RunDir.DONE}",
    params:
        run_dir=run_dir_of,
        options=train_options,
        launcher=train_launcher,
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/train/{dataset}/{variant}/seed{seed}.log",
    threads: TRAIN_THREADS
    priority: train_priority
    resources:
        gpu=GPUS_PER_JOB,
    shell:
        "{params.launcher} train --dataset {wildcards.dataset} --data-root {input.data} {params.options}"
        " --seed {wildcards.seed} --out {params.run_dir} --quiet > {log} 2>&1"
