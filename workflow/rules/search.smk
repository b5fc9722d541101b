# Architecture search (ATRC): one search per (dataset, search, search seed), then a majority vote per
# block over the seeds; searched variants retrain from the voted genotype (train.smk's genotype input).
# Like training, a search declares only its genotype.json, so a killed search resumes from last.pt.


rule search:
    input:
        data=data_path,
        configs=search_configs,
    output:
        genotype=f"{SEARCH}/{RunDir.GENOTYPE}",
    params:
        run_dir=run_dir_of,
        model=search_model,
        options=search_options,
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/search/{dataset}/{search}/seed{seed}.log",
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    shell:
        "mtl3d search {params.model} --dataset {wildcards.dataset} --data-root {input.data} {params.options}"
        " --seed {wildcards.seed} --out {params.run_dir} --quiet > {log} 2>&1"


rule vote:
    input:
        search_genotypes,
    output:
        genotype=VOTED_GENOTYPE,
    params:
        search_dir=search_dir_of,
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/vote/{dataset}/{search}.log",
    shell:
        "mtl3d search vote --out {output.genotype} {params.search_dir} > {log} 2>&1"
