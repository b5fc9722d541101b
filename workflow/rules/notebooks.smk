# Notebooks run by papermill (kernel python3, parameters passed with -p); the executed copies land in
# results/STUDY/notebooks/. The notebooks only read files and call mtl3d.reporting.


rule results_tables:
    input:
        notebook="notebooks/results_tables.ipynb",
        summary="results/{study}/summary.csv",
        comparisons="results/{study}/comparisons.csv",
    output:
        notebook="results/{study}/notebooks/results_tables.ipynb",
        tables=directory("results/{study}/tables"),
    params:
        reference=config["reference"],
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/notebooks/results_tables.log",
    localrule: True
    shell:
        "papermill {input.notebook} {output.notebook} -k python3 --no-progress-bar"
        " -p summary_csv {input.summary} -p comparisons_csv {input.comparisons} -p out_dir {output.tables}"
        " -p reference {params.reference} > {log} 2>&1"


rule figures:
    input:
        notebook="notebooks/figures.ipynb",
        summary="results/{study}/summary.csv",
        comparisons="results/{study}/comparisons.csv",
        done=study_dones,
    output:
        notebook="results/{study}/notebooks/figures.ipynb",
        figures=report(
            directory("results/{study}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    params:
        runs_root=runs_root_of,
        reference=config["reference"],
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/notebooks/figures.log",
    localrule: True
    shell:
        "papermill {input.notebook} {output.notebook} -k python3 --no-progress-bar"
        " -p summary_csv {input.summary} -p comparisons_csv {input.comparisons} -p runs_root {params.runs_root}"
        " -p out_dir {output.figures} -p reference {params.reference} > {log} 2>&1"


rule qualitative:
    input:
        notebook="notebooks/qualitative.ipynb",
        predictions=study_predictions,
    output:
        notebook="results/{study}/notebooks/qualitative.ipynb",
        figures=report(
            directory("results/{study}/qualitative"),
            patterns=["{name}.png"],
            caption="../report/qualitative.rst",
            category="Qualitative",
        ),
    params:
        runs_root=runs_root_of,
        reference=config["reference"],
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/notebooks/qualitative.log",
    localrule: True
    shell:
        "papermill {input.notebook} {output.notebook} -k python3 --no-progress-bar"
        " -p runs_root {params.runs_root} -p out_dir {output.figures} -p reference {params.reference}"
        " > {log} 2>&1"


rule dataset_notebook:
    input:
        notebook="notebooks/dataset.ipynb",
        data=data_path,
    output:
        notebook="results/{study}/notebooks/dataset_{dataset}.ipynb",
        figures=report(
            directory("results/{study}/dataset/{dataset}"),
            patterns=["{name}.png"],
            caption="../report/dataset.rst",
            category="Dataset",
        ),
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/notebooks/dataset_{dataset}.log",
    localrule: True
    shell:
        "papermill {input.notebook} {output.notebook} -k python3 --no-progress-bar"
        " -p data_root {input.data} -p out_dir {output.figures} > {log} 2>&1"
