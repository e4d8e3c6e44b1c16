"""The pass pipeline of each optimization level: one visible list each, in order."""

from __future__ import annotations

from trtjit.passmanager import Pass, load_pass

PIPELINES: dict[int, list[str]] = {
    # every op its own kernel: only what lowering needs
    0: ["decompose", "assign_precision", "quantize_int8", "dead_code_elimination", "materialize_views", "memory_plan"],
    # fold and clean up, no fusion
    1: ["dead_code_elimination", "remove_noops", "constant_folding", "fold_batchnorm", "decompose",
        "constant_folding", "assign_precision", "quantize_int8", "remove_noops", "dead_code_elimination",
        "fold_view_chains", "materialize_views", "memory_plan"],
    # everything: fusion of GEMM epilogues, row reductions and pointwise chains; tiles from the tuning cache
    2: ["dead_code_elimination", "remove_noops", "constant_folding", "fold_batchnorm", "fuse_attention", "decompose",
        "constant_folding", "assign_precision", "remove_noops", "dead_code_elimination", "merge_parallel_gemms",
        "quantize_int8", "patchify_conv", "unflatten_matmul_rows", "sink_permutes", "fuse_gemm_epilogue",
        "fuse_reductions", "fuse_pointwise", "layout_nhwc", "stem_input_nhwc", "conv_weight_layout", "fold_view_chains",
        "materialize_views", "memory_plan", "gemm_tactic", "autotune"],
}
# level 3: the same passes; autotune also times candidate tiles on the GPU (passes/autotune.py)
PIPELINES[3] = list(PIPELINES[2])


def passes_for(level: int) -> list[Pass]:
    return [load_pass(n) for n in PIPELINES[level]]
