# One tidy summary.csv per study (+ mean metrics for `dvc metrics`, Δm per variant for `dvc plots`, and the
# paired host vs host+3d comparisons with bootstrap intervals that the tables and figures mark and plot).


rule collect:
    input:
        metrics=study_metrics,
    output:
        summary="results/{study}/summary.csv",
        json="results/{study}/summary.json",
        delta="results/{study}/delta_m.csv",
        comparisons="results/{study}/comparisons.csv",
        curves="results/{study}/learning_curves.csv",
    params:
        runs_root=runs_root_of,
        reference=config["reference"],
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/collect.log",
    localrule: True
    shell:
        "mtl3d report collect --runs-root {params.runs_root} --study {wildcards.study}"
        " --reference {params.reference} --out {output.summary} --json {output.json}"
        " --delta-csv {output.delta} --comparisons {output.comparisons} --curves {output.curves}"
        " > {log} 2>&1"


# Optional (a study's `export` list, empty by default): each listed variant's best seed by Δm as a
# shareable model file and its model card (mtl3d export; docs/pipeline.md).
rule export:
    input:
        summary="results/{study}/summary.csv",
    output:
        model=EXPORTED_MODEL,
        card=EXPORTED_MODEL.removesuffix(".mtl3d") + ".md",
    params:
        variant_dir=variant_dir_of,
    conda:
        PROJECT_ENV
    log:
        "logs/{study}/export_{dataset}_{variant}.log",
    localrule: True
    shell:
        "mtl3d export {params.variant_dir} --best-seed {input.summary} --out {output.model} --card > {log} 2>&1"
