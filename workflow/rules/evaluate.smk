# Scores a finished run on the study's eval split: metrics.json + a few saved predictions.


rule evaluate:
    input:
        done="results/runs/{study}/{dataset}/{variant}/seed{seed}/done",
        data=data_path,
    output:
        metrics="results/runs/{study}/{dataset}/{variant}/seed{seed}/metrics.json",
        predictions=directory("results/runs/{study}/{dataset}/{variant}/seed{seed}/predictions"),
    params:
        run_dir=run_dir_in,
        split=config["eval_split"],
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/evaluate/{dataset}/{variant}/seed{seed}.log",
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    shell:
        "mtl3d evaluate {params.run_dir} --split {params.split} --quiet > {log} 2>&1"
