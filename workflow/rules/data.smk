# Raw data: data/raw/NAME (`mtl3d data download NAME` verifies or fetches the archives and writes a
# marker; SynthRooms needs no download, its marker only says so). Prepared datasets:
# data/processed/DATA_DIR (SynthRooms is generated there; NYUD/PASCAL are converted from data/raw/NAME).


rule download:
    output:
        "data/raw/.verified/{data_dir}.json",
    params:
        dataset=prepare_name,
        options=download_options,
    conda:
        PROJECT_ENV
    log:
        "logs/data/download_{data_dir}.log",
    threads: 1
    shell:
        "mtl3d data download {params.dataset} --marker {output} {params.options} > {log} 2>&1"


rule prepare:
    input:
        raw="data/raw/.verified/{data_dir}.json",
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
