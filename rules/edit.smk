# Edited videos: an edit of the manipulator (rules/manipulator.smk) rendered by the actor's
# renderer (rules/renderer.smk) into the source video with its audio, per variant under
# work/edit/<variant>/<actor>/; results/<actor>/edited_<emotion>[_ref_<ref_actor>].mp4 are those of
# edit.variant, each with a JSON record of its source, settings and model files.


rule edit_video:
    input:
        unpack(edit_video_inputs),
    output:
        video="work/edit/{variant}/{actor}/{clip}_{emotion}{ref}.mp4",
        record="work/edit/{variant}/{actor}/{clip}_{emotion}{ref}.json",
    log:
        "logs/edit_video/{variant}/{actor}/{clip}_{emotion}{ref}.log",
    benchmark:
        "benchmarks/edit_video/{variant}/{actor}/{clip}_{emotion}{ref}.tsv"
    wildcard_constraints:
        variant="|".join(EDIT_VIDEO_VARIANTS),
        actor="|".join(RENDERER_ACTORS),
        clip=TEST_CLIP,
        ref=f"({REFERENCE_SUFFIX})?",
    conda:
        "../envs/scmcl.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(30),
        **gpu_resources(),
    params:
        clip_dir=source_clip_dir,
        settings=EDIT_VIDEO_SETTINGS,
    shell:
        "scmcl edit video --edit {input.edit} --edit-record {input.edit_record} --renderer {input.renderer}"
        " --clip-dir {params.clip_dir} --manifest {input.manifest} --model {input.model} --landmarks {input.landmarks}"
        " {params.settings} --out {output.video} --record {output.record} --threads {threads} --device {resources.device} > {log} 2>&1"


rule result_video:
    input:
        unpack(result_source),
    output:
        video="results/{actor}/edited_{emotion}{ref}.mp4",
        record="results/{actor}/edited_{emotion}{ref}.json",
    log:
        "logs/result_video/{actor}/edited_{emotion}{ref}.log",
    wildcard_constraints:
        actor="[^/]+",  # any name, so that an unconfigured one is a clear error (result_source)
        emotion="[a-z]+",
        ref="(_ref_[^/]+)?",
    localrule: True
    conda:
        "../envs/scmcl.yaml"
    shell:
        "cp {input.video} {output.video} && cp {input.record} {output.record} && echo copied > {log}"
