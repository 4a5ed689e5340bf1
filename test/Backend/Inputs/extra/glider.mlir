// A small GLIDER layer (inline weights): cosine router, sequence scores
// [B, 4] and a token-to-sequence map [T] as extra inputs, top-2 experts.
module {
  func.func @layer_0(%x: tensor<?x16xf32>, %g: tensor<?x4xf32> {moe.input = "seq_scores"}, %m: tensor<?xi32> {moe.input = "seq_map"}) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
    %wr = arith.constant dense<[[1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0], [0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25], [-0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5], [0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0, 0.5, -0.25, 0.0, 1.0]]> : tensor<4x16xf32>
    %l = moe.router_linear %x, %wr {normalize = #moe.router_normalize<both>, scale = 4.0 : f32} : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %s = moe.add_sequence_scores %l, %g, %m : tensor<?x4xf32>, tensor<?x4xf32>, tensor<?xi32>
    %p = moe.softmax %s : tensor<?x4xf32>
    %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %v : tensor<?x2xf32>
    %c, %o, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %wg = arith.constant dense<0.125> : tensor<4x8x16xf32>
    %wd = arith.constant dense<0.0625> : tensor<4x16x8xf32>
    %ys = moe.expert_ffn %xs, %o gate(%wg) up(%wg) down(%wd) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    return %y : tensor<?x16xf32>
  }
}
