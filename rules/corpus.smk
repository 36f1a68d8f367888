# Corpus stage: the built-in synthetic MEAD-layout corpus (dataset: synthetic).


if config["dataset"] == "synthetic":

    rule synth_head:
        output:
            model=config["flame"]["model"],
            landmarks=config["flame"]["landmark_embedding"],
        log:
            "logs/synth_head.log",
        benchmark:
            "benchmarks/synth_head.tsv"
        conda:
            "../envs/scmcl.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            settings=flags("synthetic", ["seed"]),
        shell:
            "scmcl corpus head {params.settings} --model {output.model}"
            " --landmarks {output.landmarks} > {log} 2>&1"

    rule synth_corpus:
        input:
            model=config["flame"]["model"],
            landmarks=config["flame"]["landmark_embedding"],
        output:
            videos=actor_clip_files("video"),
            audios=actor_clip_files("audio"),
            groundtruth=actor_clip_files("groundtruth"),
        log:
            "logs/synth_corpus/{actor}.log",
        benchmark:
            "benchmarks/synth_corpus/{actor}.tsv"
        conda:
            "../envs/scmcl.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=runtime_min(60),
            **gpu_resources(),
        params:
            root=corpus_root_of_outputs,
            settings=" ".join([flags("", ["emotions", "levels"]), flags("synthetic")]),
        shell:
            "scmcl corpus synth --model {input.model} --landmarks {input.landmarks}"
            " --root {params.root} --actor {wildcards.actor} {params.settings} --threads {threads} --device {resources.device} > {log} 2>&1"

    # The paired ground truth of a neutral test clip: its sentence, timing and head motion shown in
    # another emotion at the last configured level, in a MEAD-layout tree of its own
    # (work/paired/corpus), scanned and preprocessed like the corpus by rules/preprocess.smk.
    rule paired_corpus:
        input:
            model=config["flame"]["model"],
            landmarks=config["flame"]["landmark_embedding"],
            # Rendered again from the generator, not read: the corpus's clip is an input so the pair
            # follows a regenerated corpus, and a test clip the corpus lacks is a missing input.
            source=video_path(ROOT, "{actor}", EDIT_SOURCE),
        output:
            video=paired_clip_file("video"),
            audio=paired_clip_file("audio"),
            groundtruth=paired_clip_file("groundtruth"),
        log:
            "logs/paired_corpus/{actor}/{emotion}/{clip}.log",
        benchmark:
            "benchmarks/paired_corpus/{actor}/{emotion}/{clip}.tsv"
        wildcard_constraints:
            actor="|".join(config["actors"]),
            emotion="|".join(PAIRED_EMOTIONS),
            clip="|".join(config["test_clips"]),
        conda:
            "../envs/scmcl.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=runtime_min(10),
            **gpu_resources(),
        params:
            root=corpus_root_of_outputs,
            source=f"--emotion {EDIT_SOURCE.emotion} --level {EDIT_SOURCE.level}",
            level=PAIRED_LEVEL,
            settings=flags("synthetic", CLIP_SETTINGS),
        shell:
            "scmcl corpus paired --model {input.model} --landmarks {input.landmarks} --root {params.root}"
            " --actor {wildcards.actor} {params.source} --clip {wildcards.clip} --target-emotion {wildcards.emotion}"
            " --target-level {params.level} {params.settings} --threads {threads} --device {resources.device} > {log} 2>&1"
