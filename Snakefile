# scmcl: SCMCL speech-preserving facial expression manipulation as a Snakemake workflow.
# The demo (`snakemake`) runs on the built-in synthetic corpus; see README.md for real data.
from snakemake.utils import min_version

min_version("9.27")


# The demo's settings apply only when no --configfile is given. Snakemake would merge a paper
# config over them key by key, so a MEAD run would inherit the demo's actors and its demo-size
# networks; a config file means exactly what it says plus the schema's defaults.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/corpus.smk"
include: "rules/preprocess.smk"
include: "rules/scmc.smk"
include: "rules/manipulator.smk"
include: "rules/renderer.smk"
include: "rules/edit.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        corpus_files(),
        preprocess_files(),
        scmc_files(),
        manipulator_files(),
        renderer_files(),
        result_files(),
        evaluation_files(),
        paper_files() if any(PAPER["weights"].values()) else [],  # without a network every metric is skipped


rule corpus:
    input:
        corpus_files(),


rule preprocess:
    input:
        preprocess_files(),


rule scmc:
    input:
        scmc_files(),


rule manipulator:
    input:
        manipulator_files(),


rule renderer:
    input:
        renderer_files(),


rule results:
    input:
        result_files(),


rule evaluation:
    input:
        evaluation_files(),
