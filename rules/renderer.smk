# Per-actor neural face renderer: NED training and SCMCL fine-tuning (`{variant}`) for each actor
# of renderer.actors, and held-out scores beside the mean face and NMFC retrieval. Trainers
# checkpoint under work/train/train_renderer_<variant>_<actor>/ and resume on a rerun. A released
# generator named in renderer.weights.<variant>.<actor> is validated and copied instead, to its
# own path (renderer_weights in rules/common.smk picks the one a consumer reads).


rule train_renderer:
    input:
        unpack(renderer_inputs),
    output:
        weights="work/renderer/{actor}/{variant}.pth",
        metrics="work/renderer/{actor}/{variant}.metrics.tsv",
        samples=report("work/renderer/{actor}/{variant}.samples.png", category="Renderer",
                       caption="../report/renderer_samples.rst"),
    log:
        "logs/train_renderer/{variant}/{actor}.log",
    benchmark:
        "benchmarks/train_renderer/{variant}/{actor}.tsv"
    wildcard_constraints:
        variant="|".join(RENDERER_VARIANTS),
        actor="|".join(RENDERER_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    threads: THREADS
    priority: TRAIN_PRIORITY
    resources:
        mem_mb=mem_mb(8000),
        runtime=runtime_min(1440),
        **gpu_resources(),
    params:
        data=renderer_data_flags,
        settings=renderer_settings,
        run_dir="work/train/train_renderer_{variant}_{actor}",
    shell:
        "scmcl renderer train {wildcards.variant} {params.data} {params.settings} --run-dir {params.run_dir}"
        " --out {output.weights} --metrics {output.metrics} --samples {output.samples} --threads {threads} --device {resources.device} > {log} 2>&1"


rule import_renderer:
    input:
        released=lambda wildcards: RENDERER["weights"][wildcards.variant][wildcards.actor],
    output:
        weights="work/renderer/released/{variant}/{actor}.pth",
    log:
        "logs/import_renderer/{variant}/{actor}.log",
    wildcard_constraints:
        variant="|".join(RENDERER_VARIANTS),
    conda:
        "../envs/scmcl.yaml"
    resources:
        device="cpu",  # requests no GPU, so it runs on the CPU wherever it goes
        mem_mb=mem_mb(2000),
        runtime=runtime_min(10),
    params:
        settings=RENDERER_NETWORKS,
    shell:
        "scmcl renderer import {wildcards.variant} {input.released} {params.settings} --out {output.weights} --device {resources.device} > {log} 2>&1"


rule evaluate_renderer:
    input:
        weights=lambda wildcards: renderer_weights(wildcards.variant, wildcards.actor),
        shards=renderer_shards,
    output:
        scores="work/renderer/{actor}/{variant}.eval.tsv",
        grid=report("work/renderer/{actor}/{variant}.eval.png", category="Renderer",
                    caption="../report/renderer_eval.rst"),
    log:
        "logs/evaluate_renderer/{variant}/{actor}.log",
    benchmark:
        "benchmarks/evaluate_renderer/{variant}/{actor}.tsv"
    wildcard_constraints:
        variant="|".join(RENDERER_VARIANTS),
        actor="|".join(RENDERER_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(30),
        **gpu_resources(),
    params:
        settings=" ".join([RENDERER_NETWORKS, flags("", ["test_clips"])]),
    shell:
        "scmcl renderer evaluate --weights {input.weights} --shards {input.shards} {params.settings}"
        " --out {output.scores} --grid {output.grid} --threads {threads} --device {resources.device} > {log} 2>&1"
