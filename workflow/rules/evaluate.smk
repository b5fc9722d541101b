# Scores a finished run on the study's eval split: metrics.json + a few saved predictions.


rule evaluate:
    input:
        done=f"{RUN}/{RunDir.DONE}",
        data=data_path,
    output:
        metrics=f"{RUN}/{RunDir.METRICS}",
        predictions=directory(f"{RUN}/{RunDir.PREDICTIONS}"),
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
