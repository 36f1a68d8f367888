# Evaluation on the synthetic corpus (its paired ground truth): the face classifier, the naive
# baseline's edits, one scored row per method and renderer actor (source, naive, NED,
# NED+SCMCL, truth), results/evaluation.tsv and .png; and the report's contact sheets,
# training curves and video page.


rule train_face_classifier:
    input:
        shards=expand("work/preprocess/{actor}/{emotion}.parquet", actor=config["actors"], emotion=config["emotions"]),
    output:
        weights="work/evaluate/face_classifier.pt",
        report="work/evaluate/face_classifier.json",
    log:
        "logs/train_face_classifier.log",
    benchmark:
        "benchmarks/train_face_classifier.tsv"
    conda:
        "../envs/scmcl.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(60),
        **gpu_resources(),
    params:
        settings=" ".join([flags("", ["emotions", "test_clips"]), flags("evaluate.face_classifier"), DEVICE]),
    shell:
        "scmcl evaluate face-classifier --shards {input.shards} {params.settings} --out {output.weights}"
        " --report {output.report} --threads {threads} > {log} 2>&1"


rule naive_edit:
    input:
        "work/preprocess/{actor}/expressions.parquet",
    output:
        edit="work/evaluate/naive/{actor}/{clip}_{emotion}.parquet",
        record="work/evaluate/naive/{actor}/{clip}_{emotion}.json",
    log:
        "logs/naive_edit/{actor}/{clip}_{emotion}.log",
    wildcard_constraints:
        clip="[0-9]+",
    conda:
        "../envs/scmcl.yaml"
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime_min(10),
    params:
        source=f"--source-emotion {PAIRED_SOURCE.emotion} --level {PAIRED_SOURCE.level}",
        settings=flags("", ["test_clips"]),
    shell:
        "scmcl evaluate naive --expressions {input} --actor {wildcards.actor} --clip {wildcards.clip} {params.source}"
        " --emotion {wildcards.emotion} {params.settings} --out {output.edit} --record {output.record} > {log} 2>&1"


rule evaluate_row:
    input:
        unpack(evaluation_row_inputs),
    output:
        "work/evaluate/{actor}/{row}.tsv",
    log:
        "logs/evaluate_row/{actor}/{row}.log",
    benchmark:
        "benchmarks/evaluate_row/{actor}/{row}.tsv"
    wildcard_constraints:
        actor="|".join(RENDERER_ACTORS),
        row="|".join(EVALUATION_ROWS),
    conda:
        "../envs/scmcl.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(30),
    params:
        clip=EDIT_CLIP,
        emotions=" ".join(EDIT_EMOTIONS),
        clips=evaluation_row_flags,
        device=DEVICE,
    shell:
        "scmcl evaluate score --row {wildcards.row} --actor {wildcards.actor} --clip {params.clip} --emotions {params.emotions}"
        " --videos {input.videos} --drivers {input.drivers} --truth-videos {input.truth_videos} {params.clips}"
        " --truth-expressions {input.truth_expressions} --source-video {input.source_video}"
        " --face-classifier {input.face_classifier} --expression-classifier {input.expression_classifier}"
        " {params.device} --out {output} --threads {threads} > {log} 2>&1"


rule evaluation_table:
    input:
        rows=expand("work/evaluate/{actor}/{row}.tsv", actor=RENDERER_ACTORS, row=EVALUATION_ROWS),
        face_report="work/evaluate/face_classifier.json",
    output:
        table=report("results/evaluation.tsv", category="Evaluation", caption="../report/evaluation_table.rst"),
        plot=report("results/evaluation.png", category="Evaluation", caption="../report/evaluation_plot.rst"),
    log:
        "logs/evaluation_table.log",
    conda:
        "../envs/scmcl.yaml"
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime_min(10),
    shell:
        "scmcl evaluate table --rows {input.rows} --face-report {input.face_report} --out {output.table}"
        " --plot {output.plot} > {log} 2>&1"


rule contact_sheet:
    input:
        contact_sheet_videos,
    output:
        report("work/evaluate/{actor}/sheet_{emotion}.png", category="Edits", subcategory="{actor}",
               caption="../report/contact_sheet.rst", labels={"actor": "{actor}", "emotion": "{emotion}"}),
    log:
        "logs/contact_sheet/{actor}/{emotion}.log",
    wildcard_constraints:
        actor="|".join(RENDERER_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    params:
        settings=flags("evaluate", ["contact_frames"]),
    shell:
        "scmcl evaluate sheet --labels source naive NED NED+SCMCL truth --videos {input} {params.settings}"
        " --out {output} > {log} 2>&1"


rule training_curves:
    input:
        "work/{trainer}.metrics.tsv",
    output:
        report("work/report/curves/{trainer}.png", category="Training curves", caption="../report/training_curves.rst",
               labels={"trainer": "{trainer}"}),
    log:
        "logs/training_curves/{trainer}.log",
    conda:
        "../envs/scmcl.yaml"
    shell:
        "scmcl evaluate curves --metrics {input} --title {wildcards.trainer} --out {output} > {log} 2>&1"


rule videos_page:
    input:
        videos=video_page_videos(),
    output:
        report(directory("work/report/videos"), htmlindex="index.html", category="Edits",
               caption="../report/videos_page.rst"),
    log:
        "logs/videos_page.log",
    conda:
        "../envs/scmcl.yaml"
    params:
        entries=video_page_entries,
    shell:
        "scmcl evaluate page --title 'Edited videos' --entry {params.entries} --out {output} > {log} 2>&1"
