"""Edits an imported synthetic Mixtral the way docs/writing-a-router.md says.

  write_router.py IN.mlir OUT.mlir scale|addf|maxk9
"""
import sys

src, dst, variant = sys.argv[1:4]
text = open(src).read()
cut = text.index("func.func @layer_1")
layer0, rest = text[:cut], text[cut:]
old = """    %2 = moe.softmax %1 : tensor<?x8xf32>
    %ids, %values = moe.topk %2 {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %3 = moe.normalize %values : tensor<?x2xf32>
"""
scale = {"scale": "%s = moe.scale %1 {factor = 2.0 : f32} : tensor<?x8xf32>",
         "addf": "%s = arith.addf %1, %1 : tensor<?x8xf32>",
         "maxk9": "%s = moe.scale %1 {factor = 2.0 : f32} : tensor<?x8xf32>"}[variant]
max_k = 9 if variant == "maxk9" else 4
new = """    %s
    %%2 = moe.softmax %%s : tensor<?x8xf32>
    %%ids, %%values = moe.top_p %%2 {p = 0.6 : f32, max_k = %d : i64} : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    %%3 = moe.normalize %%values : tensor<?x4xf32>
""" % (scale, max_k)
if old not in layer0:
    sys.exit("write_router.py: layer 0 of %s is not the synthetic Mixtral router "
             "the guide starts from" % src)
layer0 = layer0.replace(old, new)
layer0 = layer0.replace("moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32>",
                        "moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x4xi32>")
layer0 = layer0.replace("tensor<?xi32>, tensor<?x2xf32>)", "tensor<?xi32>, tensor<?x4xf32>)")
open(dst, "w").write(layer0 + rest)
