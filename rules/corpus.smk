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
            settings=" ".join([flags("", ["emotions", "levels"]), flags("synthetic"), DEVICE]),
        shell:
            "scmcl corpus synth --model {input.model} --landmarks {input.landmarks}"
            " --root {params.root} --actor {wildcards.actor} {params.settings} --threads {threads} > {log} 2>&1"
