# Prepared datasets: data/processed/DATA_DIR (SynthRooms is generated here; other datasets read
# data/raw/NAME, downloaded beforehand with `mtl3d data download NAME`).


rule prepare:
    output:
        directory("data/processed/{data_dir}"),
    params:
        dataset=prepare_name,
        options=prepare_options,
    conda:
        PROJECT_ENV
    log:
        "logs/data/prepare_{data_dir}.log",
    threads: 1
    shell:
        "mtl3d data prepare {params.dataset} --root {output} {params.options} > {log} 2>&1"
