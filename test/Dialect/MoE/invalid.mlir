// One case per verifier rule of the moe dialect.
// RUN: moe-opt %s --split-input-file --verify-diagnostics

func.func @case0() {
  // expected-error @+1 {{'names' must list at least one tensor name}}
  %0 = moe.weight [] from ["m.safetensors"] : tensor<4xf32>
  return
}

// -----

func.func @stacked_one() {
  // expected-error @+1 {{stacking 1 tensors needs a result whose dimension 0 is 1, got 'tensor<8x64xf32>'}}
  %0 = moe.weight stacked ["a"] from ["m.safetensors"] : tensor<8x64xf32>
  return
}

// -----

func.func @case1() {
  // expected-error @+1 {{'files' must hold one file for all names or one file per name (3), got 2}}
  %0 = moe.weight ["a", "b", "c"] from ["x.safetensors", "y.safetensors"] : tensor<3x4xf32>
  return
}

// -----

func.func @case2() {
  // expected-error @+1 {{'names'[0] is empty}}
  %0 = moe.weight [""] from ["m.safetensors"] : tensor<4xf32>
  return
}

// -----

func.func @case3() {
  // expected-error @+1 {{result must have a static shape}}
  %0 = moe.weight ["a"] from ["m.safetensors"] : tensor<?x4xf32>
  return
}

// -----

func.func @case4() {
  // expected-error @+1 {{stacking 2 tensors needs a result whose dimension 0 is 2}}
  %0 = moe.weight ["a", "b"] from ["m.safetensors"] : tensor<3x4xf32>
  return
}

// -----

func.func @case5(%x3: tensor<2x?x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{'input' must have rank 2 ([T, H]), got rank 3}}
  %0 = moe.router_linear %x3, %w : (tensor<2x?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @case6(%x: tensor<?x64xf32>, %w: tensor<8x32xf32>) {
  // expected-error @+1 {{'weight' dimension 1 (hidden size of 'input') must be 64, got 32}}
  %0 = moe.router_linear %x, %w : (tensor<?x64xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @case7(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>, %b: tensor<6xf32>) {
  // expected-error @+1 {{'bias' dimension 0 (experts, from 'weight') must be 8, got 6}}
  %0 = moe.router_linear %x, %w bias %b : (tensor<?x64xf32>, tensor<8x64xf32>, tensor<6xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @case8(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{'result' dimension 1 (experts, from 'weight') must be 8, got 4}}
  %0 = moe.router_linear %x, %w : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x4xf32>
  return
}

// -----

func.func @case9(%x: tensor<?x64xi32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of 32-bit float or bfloat16 type or 16-bit float values}}
  %0 = moe.router_linear %x, %w : (tensor<?x64xi32>, tensor<8x64xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @case10(%s: tensor<?x8xf32>, %g: tensor<4xf32>) {
  // expected-error @+1 {{'weight' dimension 0 (columns of 'input') must be 8, got 4}}
  %0 = moe.rms_norm %s weight %g : tensor<4xf32> : tensor<?x8xf32>
  return
}

// -----

func.func @case11(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'epsilon' must be >= 0, got -1}}
  %0 = moe.rms_norm %s {epsilon = -1.0 : f32} : tensor<?x8xf32>
  return
}

// -----

func.func @case12(%s: tensor<?x8xf32>, %b: tensor<6xf32>) {
  // expected-error @+1 {{'bias' dimension 0 (experts of 'input') must be 8, got 6}}
  %0 = moe.bias_add %s, %b : tensor<?x8xf32>, tensor<6xf32>
  return
}

// -----

func.func @case14(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{experts (8) are not divisible into 'num_groups' = 3 groups}}
  %0 = moe.group_limit %s {group_score = #moe.group_score<max>, keep_groups = 1 : i64, num_groups = 3 : i64} : tensor<?x8xf32>
  return
}

// -----

func.func @case15(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'keep_groups' must be in [1, num_groups = 4], got 5}}
  %0 = moe.group_limit %s {group_score = #moe.group_score<max>, keep_groups = 5 : i64, num_groups = 4 : i64} : tensor<?x8xf32>
  return
}

// -----

func.func @case16(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'num_groups' must be >= 1, got 0}}
  %0 = moe.group_limit %s {group_score = #moe.group_score<max>, keep_groups = 1 : i64, num_groups = 0 : i64} : tensor<?x8xf32>
  return
}

// -----

func.func @case17(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'group_score' top2_sum needs at least 2 experts per group, got 1}}
  %0 = moe.group_limit %s {group_score = #moe.group_score<top2_sum>, keep_groups = 1 : i64, num_groups = 8 : i64} : tensor<?x8xf32>
  return
}

// -----

func.func @case18(%s: tensor<?x?xf32>) {
  // expected-error @+1 {{the number of experts (dimension 1 of 'input') must be static to form groups}}
  %0 = moe.group_limit %s {group_score = #moe.group_score<max>, keep_groups = 1 : i64, num_groups = 2 : i64} : tensor<?x?xf32>
  return
}

// -----

func.func @case19(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'k' = 9 exceeds the number of experts (including null experts) of 'input', 8}}
  %i, %v = moe.topk %s {k = 9 : i64} : tensor<?x8xf32> -> tensor<?x9xi32>, tensor<?x9xf32>
  return
}

// -----

func.func @case20(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'k' must be >= 1, got 0}}
  %i, %v = moe.topk %s {k = 0 : i64} : tensor<?x8xf32> -> tensor<?x0xi32>, tensor<?x0xf32>
  return
}

// -----

func.func @case21(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'ids' dimension 1 ('k') must be 2, got 3}}
  %i, %v = moe.topk %s {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @case22(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'p' must be in (0, 1], got 1.5}}
  %i, %v = moe.top_p %s {p = 1.5 : f32, max_k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @case23(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'p' must be in (0, 1], got 0}}
  %i, %v = moe.top_p %s {p = 0.0 : f32, max_k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @case24(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'max_k' must be in [1, 8] (the number of experts), got 9}}
  %i, %v = moe.top_p %s {p = 0.5 : f32, max_k = 9 : i64} : tensor<?x8xf32> -> tensor<?x9xi32>, tensor<?x9xf32>
  return
}

// -----

func.func @case25(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'max_k' must be in [1, 8] (the number of experts), got 12}}
  %i, %v = moe.threshold %s {max_k = 12 : i64} : tensor<?x8xf32> -> tensor<?x12xi32>, tensor<?x12xf32>
  return
}

// -----

func.func @case26(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'capacity' must be > 0 tokens per expert, got 0}}
  %i, %v = moe.expert_choice %s {capacity = 0 : i64} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @case27(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'capacity' must be > 0 tokens per expert, got -3}}
  %i, %v = moe.expert_choice %s {capacity = -3 : i64} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @case28(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'ids' dimension 1 (one slot per expert of 'input') must be 8, got 2}}
  %i, %v = moe.expert_choice %s {capacity = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @case29(%s: tensor<?x8xf32>, %i: tensor<?x2xi32>) {
  // expected-error @+1 {{'result' dimension 1 (slots of 'ids') must be 2, got 3}}
  %0 = moe.gather_scores %s, %i : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x3xf32>
  return
}

// -----

func.func @case30(%s: tensor<4x8xf32>, %i: tensor<5x2xi32>) {
  // expected-error @+1 {{'ids' dimension 0 (tokens of 'scores') must be 4, got 5}}
  %0 = moe.gather_scores %s, %i : tensor<4x8xf32>, tensor<5x2xi32> -> tensor<5x2xf32>
  return
}

// -----

func.func @case31(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'num_experts' (real experts) must be >= 1, got 0}}
  %a, %b = moe.drop_null_experts %i, %w {num_experts = 0 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @case32(%i: tensor<?x2xi32>, %w: tensor<?x3xf32>) {
  // expected-error @+1 {{'weights' dimension 1 (slots of 'ids') must be 2, got 3}}
  %a, %b = moe.drop_null_experts %i, %w {num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x3xf32>
  return
}

// -----

func.func @case33(%w: tensor<?x2xf32>) {
  // expected-error @+1 {{'epsilon' must be finite and >= 0, got -1}}
  %0 = moe.normalize %w {epsilon = -1.0 : f32} : tensor<?x2xf32>
  return
}

// -----

func.func @case34(%i: tensor<?x2xi32>) {
  // expected-error @+1 {{'offsets' dimension 0 ('num_experts' + 1) must be 9, got 8}}
  %c, %o, %r = moe.dispatch %i {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<8xi32>, tensor<?xi32>
  return
}

// -----

func.func @case35(%i: tensor<?x2xi32>) {
  // expected-error @+1 {{'counts' dimension 0 ('num_experts') must be 8, got 4}}
  %c, %o, %r = moe.dispatch %i {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @case36(%i: tensor<?x2xi32>) {
  // expected-error @+1 {{'num_experts' must be >= 1, got 0}}
  %c, %o, %r = moe.dispatch %i {num_experts = 0 : i64} : tensor<?x2xi32> -> tensor<0xi32>, tensor<1xi32>, tensor<?xi32>
  return
}

// -----

func.func @case37(%x: tensor<?x64xf32>, %r: tensor<?xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'result' dimension 1 (hidden size) must be 64, got 32}}
  %0 = moe.permute %x, %r, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  return
}

// -----

func.func @case38(%x: tensor<?x64xf32>, %r: tensor<?xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'result' element type 'bf16' must match 'input' element type 'f32'}}
  %0 = moe.permute %x, %r, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
  return
}

// -----

func.func @case39(%x: tensor<5x64xf32>, %r: tensor<?xi32>, %w: tensor<6x2xf32>) {
  // expected-error @+1 {{'input' dimension 0 (tokens of 'weights') must be 6, got 5}}
  %0 = moe.permute %x, %r, %w : (tensor<5x64xf32>, tensor<?xi32>, tensor<6x2xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case40(%y: tensor<?x64xf32>, %r: tensor<?xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'input' dimension 1 (hidden size) must be 48, got 64}}
  %0 = moe.combine %y, %r, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x48xf32>
  return
}

// -----

func.func @case41(%y: tensor<10x64xf32>, %r: tensor<12xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'input' dimension 0 (routed rows of 'rows') must be 12, got 10}}
  %0 = moe.combine %y, %r, %w : (tensor<10x64xf32>, tensor<12xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case42(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>) {
  // expected-error @+1 {{give either 'gate' and 'up' or a fused 'gate_up', not both}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) gate_up(%gu) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case43(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'gate' needs its partner 'up'}}
  %0 = moe.expert_ffn %x, %o gate(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case44(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{needs 'gate' and 'up' projections, or a fused 'gate_up' projection}}
  %0 = moe.expert_ffn %x, %o down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case45(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %g2: tensor<4x32x48xf32>) {
  // expected-error @+1 {{'gate' input size must be the hidden size of 'input' (64), got 48}}
  %0 = moe.expert_ffn %x, %o gate(%g2) up(%g2) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x48xf32>, tensor<4x32x48xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case46(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %d2: tensor<4x48x32xf32>) {
  // expected-error @+1 {{'down' output size must be the hidden size of 'input' (64), got 48}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d2) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x48x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case47(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %u2: tensor<4x16x64xf32>) {
  // expected-error @+1 {{'up' has intermediate size = 16 but an earlier projection has 32}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u2) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x16x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case48(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %d2: tensor<4x64x16xf32>) {
  // expected-error @+1 {{'down' has intermediate size (input side) = 16 but the gate/up projection has 32}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d2) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x16xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case49(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %u2: tensor<3x32x64xf32>) {
  // expected-error @+1 {{'up' has E (dimension 0) = 3 but an earlier projection has 4}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u2) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<3x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case50(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x63x64xf32>) {
  // expected-error @+1 {{'gate_up' output size must be even (gate and up halves), got 63}}
  %0 = moe.expert_ffn %x, %o gate_up(%gu) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x63x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case51(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %b: tensor<4x16xf32>) {
  // expected-error @+1 {{'gate_bias' dimension 1 (intermediate size) must be 32, got 16}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d) gate_bias(%b) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x16xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case52(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>) {
  // expected-error @+1 {{'gate_bias' needs a separate 'gate' projection}}
  %0 = moe.expert_ffn %x, %o gate_up(%gu) down(%d) gate_bias(%b) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x64x64xf32>, tensor<4x64x32xf32>, tensor<4x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case53(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'gate_up_layout' interleaved needs a fused 'gate_up' projection}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>, gate_up_layout = #moe.gate_up_layout<interleaved>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case54(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'alpha' must be finite and > 0, got 0}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d) {activation = #moe.activation<swiglu_clamped>, alpha = 0.0 : f32} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case55(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'limit' must be > 0, got -1}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d) {activation = #moe.activation<swiglu_clamped>, limit = -1.0 : f32} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case56(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %ub: tensor<4x32x64xbf16>) {
  // expected-error @+1 {{'up' element type 'bf16' differs from the other projections' 'f32'}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%ub) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xbf16>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case57(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'gate' input size must be the hidden size of 'input' (64), got 32}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case58(%x: tensor<?x64xf32>, %o: tensor<4xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'offsets' dimension 0 (number of experts + 1) must be 5, got 4}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<4xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case59(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{result type 'tensor<?x64xbf16>' must equal the type of 'input' 'tensor<?x64xf32>'}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xbf16>
  return
}

// -----

func.func @case60(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+2 {{expected ::mlir::moe::Activation to be one of: silu, gelu, gelu_tanh, swiglu_clamped}}
  // expected-error @+1 {{failed to parse MoE_ActivationAttr parameter 'value'}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%u) down(%d) {activation = #moe.activation<relu2>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case61(%x: tensor<?x64xf32>, %g: tensor<4x32x64xf32>, %d: tensor<64x32xf32>) {
  // expected-error @+1 {{'gate' must have rank 2 ([out, in] with weight_layout out_in), got rank 3}}
  %0 = moe.ffn %x gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case62(%x: tensor<?x64xf32>, %f: tensor<?x2xf32>) {
  // expected-error @+1 {{'factor' dimension 1 (one factor per token) must be 1, got 2}}
  %0 = moe.row_scale %x, %f : (tensor<?x64xf32>, tensor<?x2xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @case63(%x: tensor<?x64xf32>, %w: tensor<48x64xf32>, %a: tensor<2x8x64xf32>, %b: tensor<2x48x4xf32>) {
  // expected-error @+1 {{LoRA rank mismatch: 'lora_a' has rank r = 8 (dimension 1) but 'lora_b' has r = 4 (dimension 2)}}
  %0 = moe.lora_mixture %x base(%w) lora(%a, %b) {scales = [1.0 : f32, 1.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<2x8x64xf32>, tensor<2x48x4xf32>) -> tensor<?x48xf32>
  return
}

// -----

func.func @case64(%x: tensor<?x64xf32>, %w: tensor<48x64xf32>, %a: tensor<2x8x64xf32>, %b: tensor<3x48x8xf32>) {
  // expected-error @+1 {{'lora_a' has 2 experts but 'lora_b' has 3}}
  %0 = moe.lora_mixture %x base(%w) lora(%a, %b) {scales = [1.0 : f32, 1.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<2x8x64xf32>, tensor<3x48x8xf32>) -> tensor<?x48xf32>
  return
}

// -----

func.func @case65(%x: tensor<?x64xf32>, %w: tensor<48x64xf32>, %a: tensor<2x8x32xf32>, %b: tensor<2x48x8xf32>) {
  // expected-error @+1 {{'lora_a' dimension 2 (input size of 'input') must be 64, got 32}}
  %0 = moe.lora_mixture %x base(%w) lora(%a, %b) {scales = [1.0 : f32, 1.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<2x8x32xf32>, tensor<2x48x8xf32>) -> tensor<?x48xf32>
  return
}

// -----

func.func @case66(%x: tensor<?x64xf32>, %w: tensor<48x64xf32>, %a: tensor<2x8x64xf32>, %b: tensor<2x40x8xf32>) {
  // expected-error @+1 {{'lora_b' dimension 1 (output size of 'base') must be 48, got 40}}
  %0 = moe.lora_mixture %x base(%w) lora(%a, %b) {scales = [1.0 : f32, 1.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<2x8x64xf32>, tensor<2x40x8xf32>) -> tensor<?x48xf32>
  return
}

// -----

func.func @case67(%x: tensor<?x64xf32>, %w: tensor<48x64xf32>, %a: tensor<2x8x64xf32>, %b: tensor<2x48x8xf32>) {
  // expected-error @+1 {{'scales' must hold one factor per LoRA expert (2), got 1}}
  %0 = moe.lora_mixture %x base(%w) lora(%a, %b) {scales = [1.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<2x8x64xf32>, tensor<2x48x8xf32>) -> tensor<?x48xf32>
  return
}

// -----

func.func @case68(%x: tensor<?x64xf32>, %w: tensor<48x32xf32>, %a: tensor<1x8x64xf32>, %b: tensor<1x48x8xf32>) {
  // expected-error @+1 {{'base' dimension 1 (input size of 'input') must be 64, got 32}}
  %0 = moe.lora_mixture %x base(%w) lora(%a, %b) {scales = [1.0 : f32]} : (tensor<?x64xf32>, tensor<48x32xf32>, tensor<1x8x64xf32>, tensor<1x48x8xf32>) -> tensor<?x48xf32>
  return
}

// -----

func.func @case69(%x: tensor<?x64xf32>, %w: tensor<48x64xf32>, %a: tensor<1x8x64xf32>, %b: tensor<1x48x8xf32>, %i: tensor<?x2xi32>, %rw: tensor<?x3xf32>) {
  // expected-error @+1 {{'weights' dimension 1 (slots of 'ids') must be 2, got 3}}
  %0 = moe.lora_mixture %x base(%w) lora(%a, %b) routing(%i, %rw) {scales = [1.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<1x8x64xf32>, tensor<1x48x8xf32>, tensor<?x2xi32>, tensor<?x3xf32>) -> tensor<?x48xf32>
  return
}

// -----

// expected-error @+1 {{'moe.layer' must be a non-negative integer layer index, got -1 : i64}}
func.func @neg_layer() attributes {moe.layer = -1 : i64} {
  return
}

// -----

// expected-error @+1 {{'moe.weight_root' must be a string (a directory), got 3 : i64}}
module attributes {moe.weight_root = 3 : i64} {
}

// -----

func.func @fp8_activations_on_op(%s: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.fp8_activations' is a unit attribute of moe.fused_experts}}
  %p = moe.softmax %s {moe.fp8_activations} : tensor<?x8xf32>
  return %p : tensor<?x8xf32>
}

// -----

func.func @layer_on_op(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.layer' belongs on a function, not on 'moe.softmax'}}
  %0 = moe.softmax %s {moe.layer = 1 : i64} : tensor<?x8xf32>
  return
}

// -----

func.func @fused_route_yield(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{body must yield 2 value(s) of types 'tensor<?x2xi32>', 'tensor<?x2xf32>', got 'tensor<?x2xi32>'}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i : tensor<?x2xi32>
  }
  return
}

// -----

func.func @fused_route_args(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{body must take 1 argument(s) of the operand types, got 2}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>, %b: tensor<?x16xf32>):
    %i = arith.constant dense<0> : tensor<1x2xi32>
    %ic = tensor.cast %i : tensor<1x2xi32> to tensor<?x2xi32>
    %v = arith.constant dense<0.0> : tensor<1x2xf32>
    %vc = tensor.cast %v : tensor<1x2xf32> to tensor<?x2xf32>
    moe.yield %ic, %vc : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @fused_route_experts(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'offsets' dimension 0 ('num_experts' + 1) must be 9, got 5}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 8 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<8xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @fused_experts_yield(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %rows: tensor<?xi32>, %off: tensor<5xi32>) {
  // expected-error @+1 {{body must yield 1 value(s) of types 'tensor<?x16xf32>', got 'tensor<?x2xf32>'}}
  %y = moe.fused_experts %x, %ids, %w, %rows, %off {layout = #moe.layout<grouped>} : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x16xf32> {
  ^bb0(%bx: tensor<?x16xf32>, %bi: tensor<?x2xi32>, %bw: tensor<?x2xf32>, %br: tensor<?xi32>, %bo: tensor<5xi32>):
    moe.yield %bw : tensor<?x2xf32>
  }
  return
}

// -----

func.func @fused_experts_slots(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x3xf32>, %rows: tensor<?xi32>, %off: tensor<5xi32>) {
  // expected-error @+1 {{'weights' dimension 1 (slots of 'ids') must be 2, got 3}}
  %y = moe.fused_experts %x, %ids, %w, %rows, %off {layout = #moe.layout<grouped>} : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x3xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x16xf32> {
  ^bb0(%bx: tensor<?x16xf32>, %bi: tensor<?x2xi32>, %bw: tensor<?x3xf32>, %br: tensor<?xi32>, %bo: tensor<5xi32>):
    moe.yield %bx : tensor<?x16xf32>
  }
  return
}

// -----

func.func @yield_outside(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'moe.yield' op expects parent op to be one of 'moe.fused_route, moe.fused_experts'}}
  moe.yield %x : tensor<?x16xf32>
}

// -----

// Issue 10, defect 2: a 6-way selection feeding a 4-adapter LoRA mixture.
func.func @lora_ids_out_of_range(%x: tensor<?x64xf32>, %w: tensor<48x64xf32>, %a: tensor<4x8x64xf32>, %b: tensor<4x48x8xf32>, %wg: tensor<6x64xf32>) -> tensor<?x48xf32> {
  %l = moe.router_linear %x, %wg : (tensor<?x64xf32>, tensor<6x64xf32>) -> tensor<?x6xf32>
  // expected-note @+1 {{the ids are produced here}}
  %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x6xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // expected-error @+1 {{'ids' holds ids in [0, 6) (from 'moe.topk') but the number of adapters of 'lora_a' is 4: every id must be in [0, 4) or -1}}
  %0 = moe.lora_mixture %x base(%w) lora(%a, %b) routing(%i, %v) {scales = [1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<4x8x64xf32>, tensor<4x48x8xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x48xf32>
  return %0 : tensor<?x48xf32>
}

// -----

// Issue 10, defect 2: ids of an 8-wide selection gathered from [T, 4] scores.
func.func @gather_ids_out_of_range(%s8: tensor<?x8xf32>, %s4: tensor<?x4xf32>) {
  // expected-note @+1 {{the ids are produced here}}
  %i, %v = moe.topk %s8 {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // expected-error @+1 {{'ids' holds ids in [0, 8) (from 'moe.topk') but the number of columns of 'scores' is 4: every id must be in [0, 4) or -1}}
  %g = moe.gather_scores %s4, %i : tensor<?x4xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return
}

// -----

func.func @dispatch_ids_out_of_range(%s: tensor<?x8xf32>) {
  // expected-note @+1 {{the ids are produced here}}
  %i, %v = moe.threshold %s {max_k = 3 : i64} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
  // expected-error @+1 {{'ids' holds ids in [0, 8) (from 'moe.threshold') but 'num_experts' is 4: every id must be in [0, 4) or -1}}
  %c, %o, %r = moe.dispatch %i {num_experts = 4 : i64} : tensor<?x3xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  return
}

// -----

func.func @fused_route_ids_out_of_range(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'ids' holds ids in [0, 8) (from 'moe.topk') but 'num_experts' is 4}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<8x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<8x16xf32>) -> tensor<?x8xf32>
    // expected-note @+1 {{the ids are produced here}}
    %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

// The body's ops are read by the kernels' matcher: an op it would not
// generate is named.
func.func @fused_experts_extra_op(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %rows: tensor<?xi32>, %off: tensor<5xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.fused_experts' op body cannot be generated: 'arith.mulf' computes the body's result; the expert kernels generate moe.combine, optionally plus shared experts (arith.addf)}}
  %y = moe.fused_experts %x, %ids, %w, %rows, %off {layout = #moe.layout<grouped>} : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x16xf32> {
  ^bb0(%bx: tensor<?x16xf32>, %bi: tensor<?x2xi32>, %bw: tensor<?x2xf32>, %br: tensor<?xi32>, %bo: tensor<5xi32>):
    %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
    %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
    %xs = moe.permute %bx, %br, %bw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %ys = moe.expert_ffn %xs, %bo gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
    %c = moe.combine %ys, %br, %bw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    // expected-note @+1 {{this op}}
    %m = arith.mulf %c, %bx : tensor<?x16xf32>
    moe.yield %m : tensor<?x16xf32>
  }
  return %y : tensor<?x16xf32>
}

// -----

// A dynamic 'offsets' type hides the expert count; the plan's op does not.
func.func @expert_ffn_plan_experts(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-note @+1 {{the plan is made here}}
  %c, %o, %r = moe.dispatch %i {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<?xi32>, tensor<?xi32>
  // expected-error @+1 {{'offsets' is the dispatch plan of 8 experts (from 'moe.dispatch') but the projections hold E = 4 experts}}
  %y = moe.expert_ffn %x, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<?xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  return
}

// -----

func.func @fused_route_not_a_router_op(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{body cannot be generated as one routing kernel: 'arith.addf' is not a router op (no RouterOpInterface): the routing kernel has no row template for it}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    // expected-note @+1 {{the op is here}}
    %l2 = arith.addf %l, %l : tensor<?x4xf32>
    %i, %v = moe.topk %l2 {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @fused_experts_softmax_gate(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %rows: tensor<?xi32>, %off: tensor<5xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.fused_experts' op body cannot be generated: 'moe.softmax' computes the shared experts' gate; the kernels generate sigmoid(router_linear(x)) only}}
  %y = moe.fused_experts %x, %ids, %w, %rows, %off {layout = #moe.layout<grouped>} : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x16xf32> {
  ^bb0(%bx: tensor<?x16xf32>, %bi: tensor<?x2xi32>, %bw: tensor<?x2xf32>, %br: tensor<?xi32>, %bo: tensor<5xi32>):
    %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
    %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
    %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<8x16xf32>
    %sd = moe.weight ["sd"] from ["m.safetensors"] : tensor<16x8xf32>
    %gw = moe.weight ["gw"] from ["m.safetensors"] : tensor<1x16xf32>
    %xs = moe.permute %bx, %br, %bw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %ys = moe.expert_ffn %xs, %bo gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
    %c = moe.combine %ys, %br, %bw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %s = moe.ffn %bx gate(%sg) up(%sg) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
    %gl = moe.router_linear %bx, %gw : (tensor<?x16xf32>, tensor<1x16xf32>) -> tensor<?x1xf32>
    // expected-note @+1 {{this op}}
    %gs = moe.softmax %gl : tensor<?x1xf32>
    %sc = moe.row_scale %s, %gs : (tensor<?x16xf32>, tensor<?x1xf32>) -> tensor<?x16xf32>
    %sum = arith.addf %c, %sc : tensor<?x16xf32>
    moe.yield %sum : tensor<?x16xf32>
  }
  return %y : tensor<?x16xf32>
}

// -----

func.func @fused_route_two_expert_choices(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'moe.expert_choice' is a second cross-token selection in one router}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x4xi32>, tensor<?x4xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %i, %v = moe.expert_choice %l {capacity = 2 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    // expected-note @+1 {{the op is here}}
    %i2, %v2 = moe.expert_choice %v {capacity = 2 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    moe.yield %i2, %v2 : tensor<?x4xi32>, tensor<?x4xf32>
  }
  return
}

// -----

func.func @fused_experts_unused_weight(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %rows: tensor<?xi32>, %off: tensor<5xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.fused_experts' op body cannot be generated: 'moe.weight' is not read by the body's result (the kernels would ignore it)}}
  %y = moe.fused_experts %x, %ids, %w, %rows, %off {layout = #moe.layout<grouped>} : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x16xf32> {
  ^bb0(%bx: tensor<?x16xf32>, %bi: tensor<?x2xi32>, %bw: tensor<?x2xf32>, %br: tensor<?xi32>, %bo: tensor<5xi32>):
    %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
    %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
    // expected-note @+1 {{this op}}
    %unused = moe.weight ["unused"] from ["m.safetensors"] : tensor<4x16x8xf32>
    %xs = moe.permute %bx, %br, %bw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %ys = moe.expert_ffn %xs, %bo gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
    %c = moe.combine %ys, %br, %bw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    moe.yield %c : tensor<?x16xf32>
  }
  return %y : tensor<?x16xf32>
}

// -----

// A scale factor must be finite: inf or NaN would make every output
// non-finite (a config's 1e39 is +inf in f32).
func.func @scale_not_finite(%w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  // expected-error @+1 {{'moe.scale' op 'factor' must be a finite f32, got INF}}
  %0 = moe.scale %w {factor = 0x7F800000 : f32} : tensor<?x2xf32>
  return %0 : tensor<?x2xf32>
}

// -----

func.func @scale_nan(%w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  // expected-error @+1 {{'moe.scale' op 'factor' must be a finite f32, got nan}}
  %0 = moe.scale %w {factor = 0x7FC00000 : f32} : tensor<?x2xf32>
  return %0 : tensor<?x2xf32>
}

// -----

func.func @low_rank_0(%a: tensor<32x8xf32>, %b: tensor<4x8x64xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'a' must have rank 3 ([E, out, r]), got rank 2}}
  %0 = moe.low_rank %a, %b : tensor<32x8xf32>, tensor<4x8x64xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

func.func @low_rank_1(%a: tensor<4x32x8xf32>, %b: tensor<8x64xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'b' must have rank 3 ([E, r, in]), got rank 2}}
  %0 = moe.low_rank %a, %b : tensor<4x32x8xf32>, tensor<8x64xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

func.func @low_rank_2(%a: tensor<4x32x8xf32>, %b: tensor<4x8x64xf32>) -> tensor<32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'result' must have rank 3 ([E, out, in]), got rank 2}}
  %0 = moe.low_rank %a, %b : tensor<4x32x8xf32>, tensor<4x8x64xf32> -> tensor<32x64xf32>
  return %0 : tensor<32x64xf32>
}

// -----

func.func @low_rank_3(%a: tensor<4x32x8xbf16>, %b: tensor<4x8x64xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'a' ('bf16'), 'b' ('f32') and the result ('f32') must have one element type}}
  %0 = moe.low_rank %a, %b : tensor<4x32x8xbf16>, tensor<4x8x64xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

func.func @low_rank_4(%a: tensor<4x32x0xf32>, %b: tensor<4x0x64xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'a' dimension 2 (the rank r) must be at least 1, got 0}}
  %0 = moe.low_rank %a, %b : tensor<4x32x0xf32>, tensor<4x0x64xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

func.func @low_rank_5(%a: tensor<3x32x8xf32>, %b: tensor<4x8x64xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'a' dimension 0 (experts E of the result) must be 4, got 3}}
  %0 = moe.low_rank %a, %b : tensor<3x32x8xf32>, tensor<4x8x64xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

func.func @low_rank_6(%a: tensor<4x32x8xf32>, %b: tensor<2x8x64xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'b' dimension 0 (experts E of the result) must be 4, got 2}}
  %0 = moe.low_rank %a, %b : tensor<4x32x8xf32>, tensor<2x8x64xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

func.func @low_rank_7(%a: tensor<4x16x8xf32>, %b: tensor<4x8x64xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'a' dimension 1 (output size of the result) must be 32, got 16}}
  %0 = moe.low_rank %a, %b : tensor<4x16x8xf32>, tensor<4x8x64xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

func.func @low_rank_8(%a: tensor<4x32x8xf32>, %b: tensor<4x6x64xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'b' dimension 1 (the rank r of 'a') must be 8, got 6}}
  %0 = moe.low_rank %a, %b : tensor<4x32x8xf32>, tensor<4x6x64xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

func.func @low_rank_9(%a: tensor<4x32x8xf32>, %b: tensor<4x8x48xf32>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'moe.low_rank' op 'b' dimension 2 (input size of the result) must be 64, got 48}}
  %0 = moe.low_rank %a, %b : tensor<4x32x8xf32>, tensor<4x8x48xf32> -> tensor<4x32x64xf32>
  return %0 : tensor<4x32x64xf32>
}

// -----

// Issue 13: a rank's share (--moe-shard-experts): dropped experts (-1) and
// the replica rule.
func.func @remap_drops_all(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'mapping' drops every router expert (all -1): at least one must remain}}
  %a, %b = moe.remap_experts %i, %w mapping = [-1, -1] : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @remap_replica_half(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'replica_count' and 'replica_index' go together: give both or neither}}
  %a, %b = moe.remap_experts %i, %w mapping = [0, -1] {replica_count = array<i64: 2, 1>} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @remap_replica_size(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'replica_count' and 'replica_index' must have one entry per router expert (2), got 3 and 2}}
  %a, %b = moe.remap_experts %i, %w mapping = [0, -1] {replica_count = array<i64: 2, 1, 1>, replica_index = array<i64: 0, 0>} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @remap_replica_count(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'replica_count'[1] = 0 must be at least 1}}
  %a, %b = moe.remap_experts %i, %w mapping = [0, -1] {replica_count = array<i64: 2, 0>, replica_index = array<i64: 0, 0>} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @remap_replica_index(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'replica_index'[0] = 2 is not in [0, 2) (replica_count[0])}}
  %a, %b = moe.remap_experts %i, %w mapping = [0, -1] {replica_count = array<i64: 2, 1>, replica_index = array<i64: 2, 0>} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Issue 12: moe.remap_experts.
func.func @remap_skips_merged(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'mapping' skips merged expert 1: the merged experts must be [0, 3) with every one used}}
  %a, %b = moe.remap_experts %i, %w mapping = [0, 2, 2, 0] : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @remap_negative(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'mapping'[1] = -2 is neither -1 (dropped) nor a merged expert in [0, 4) (at most one per router expert)}}
  %a, %b = moe.remap_experts %i, %w mapping = [0, -2, 1, 0] : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @remap_empty(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'mapping' must have one entry per router expert, got none}}
  %a, %b = moe.remap_experts %i, %w mapping = [] : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @remap_slots(%i: tensor<?x2xi32>, %w: tensor<?x3xf32>) {
  // expected-error @+1 {{'moe.remap_experts' op 'weights' dimension 1 (slots of 'ids') must be 2, got 3}}
  %a, %b = moe.remap_experts %i, %w mapping = [0, 1] : tensor<?x2xi32>, tensor<?x3xf32>
  return
}

// -----

// The router chooses among 8 experts but the mapping covers 4.
func.func @remap_ids_out_of_range(%s: tensor<?x8xf32>) {
  // expected-note @+1 {{the ids are produced here}}
  %i, %v = moe.topk %s {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // expected-error @+1 {{'ids' holds ids in [0, 8) (from 'moe.topk') but the number of entries of 'mapping' is 4: every id must be in [0, 4) or -1}}
  %a, %b = moe.remap_experts %i, %v mapping = [0, 1, 1, 0] : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Remapped ids are in [0, N): a dispatch over fewer experts is refused.
func.func @remap_dispatch_too_small(%s: tensor<?x4xf32>) {
  %i, %v = moe.topk %s {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // expected-note @+1 {{the ids are produced here}}
  %a, %b = moe.remap_experts %i, %v mapping = [0, 1, 2, 0] : tensor<?x2xi32>, tensor<?x2xf32>
  // expected-error @+1 {{'ids' holds ids in [0, 3) (from 'moe.remap_experts')}}
  %c, %o, %r = moe.dispatch %a {num_experts = 2 : i64} : tensor<?x2xi32> -> tensor<2xi32>, tensor<3xi32>, tensor<?xi32>
  return
}

// -----

// A given routing needs both arrays (generic form: the custom syntax has no
// way to write one).
func.func @fused_route_given_half(%x: tensor<?x16xf32>, %gi: tensor<?x2xi32>) {
  // expected-error @+1 {{'given_ids' and 'given_weights' must be given together (a given routing), got only 'given_ids'}}
  %0:5 = "moe.fused_route"(%x, %gi) <{num_experts = 4 : i64, operandSegmentSizes = array<i32: 1, 1, 0, 0>}> ({
  ^bb0(%a: tensor<?x16xf32>, %i: tensor<?x2xi32>):
    %w = arith.constant dense<1.0> : tensor<1x2xf32>
    %wc = tensor.cast %w : tensor<1x2xf32> to tensor<?x2xf32>
    moe.yield %i, %wc : tensor<?x2xi32>, tensor<?x2xf32>
  }) : (tensor<?x16xf32>, tensor<?x2xi32>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32>)
  return
}

// -----

func.func @fused_route_given_tokens(%x: tensor<8x16xf32>, %gi: tensor<4x2xi32>, %gw: tensor<4x2xf32>) {
  // expected-error @+1 {{'given_ids' dimension 0 (tokens of 'input') must be 8, got 4}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x given(%gi, %gw : tensor<4x2xi32>, tensor<4x2xf32>) {num_experts = 4 : i64} : tensor<8x16xf32> -> tensor<8x2xi32>, tensor<8x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<8x16xf32>, %i: tensor<4x2xi32>, %g: tensor<4x2xf32>):
    moe.yield %i, %g : tensor<4x2xi32>, tensor<4x2xf32>
  }
  return
}

// -----

func.func @fused_route_given_slots(%x: tensor<?x16xf32>, %gi: tensor<?x2xi32>, %gw: tensor<?x3xf32>) {
  // expected-error @+1 {{'given_weights' dimension 1 (slots of 'given_ids') must be 2, got 3}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x given(%gi, %gw : tensor<?x2xi32>, tensor<?x3xf32>) {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<?x3xf32>):
    %s = moe.scale %g {factor = 2.0 : f32} : tensor<?x3xf32>
    %w3 = moe.gather_scores %s, %i : tensor<?x3xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
    moe.yield %i, %w3 : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

// With a given routing the body takes (input, ids, weights).
func.func @fused_route_given_body_args(%x: tensor<?x16xf32>, %gi: tensor<?x2xi32>, %gw: tensor<?x2xf32>) {
  // expected-error @+1 {{body must take 3 argument(s) of the operand types, got 1}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x given(%gi, %gw : tensor<?x2xi32>, tensor<?x2xf32>) {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

// The given rows are per-token rows: not kept across a cross-token
// selection.
func.func @fused_route_given_after_choice(%x: tensor<?x16xf32>, %gi: tensor<?x2xi32>, %gw: tensor<?x2xf32>) {
  // expected-error @+1 {{body cannot be generated as one routing kernel: 'moe.yield' reads the given routing after the cross-token selection 'moe.expert_choice'}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x given(%gi, %gw : tensor<?x2xi32>, tensor<?x2xf32>) {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<?x2xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %ci, %cv = moe.expert_choice %l {capacity = 2 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    // expected-note @+1 {{the op is here}}
    moe.yield %i, %g : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

// DynMoLE: top_p's min_k, and moe.entropy_fallback.
func.func @dynmole_min_k(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'min_k' must be in [1, max_k = 2], got 3}}
  %i, %v = moe.top_p %s {p = 0.5 : f32, max_k = 2 : i64, min_k = 3 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @dynmole_min_k_zero(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'min_k' must be in [1, max_k = 2], got 0}}
  %i, %v = moe.top_p %s {p = 0.5 : f32, max_k = 2 : i64, min_k = 0 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @dynmole_prefix(%s: tensor<?x8xf32>) {
  // expected-error @+2 {{expected ::mlir::moe::TopPPrefix to be one of: reach, within}}
  // expected-error @+1 {{failed to parse MoE_TopPPrefixAttr parameter 'value'}}
  %i, %v = moe.top_p %s {p = 0.5 : f32, max_k = 2 : i64, prefix = #moe.top_p_prefix<shortest>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @dynmole_q_one(%p: tensor<?x8xf32>, %i: tensor<?x2xi32>, %v: tensor<?x2xf32>) {
  // expected-error @+1 {{'q' (the entropic index) must be finite, > 0 and != 1 (q = 1 is the Shannon limit, which the Tsallis formula divides by zero at), got 1}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 1.0 : f32, threshold = 0.5 : f32} : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @dynmole_q_negative(%p: tensor<?x8xf32>, %i: tensor<?x2xi32>, %v: tensor<?x2xf32>) {
  // expected-error @+1 {{'q' (the entropic index) must be finite, > 0 and != 1 (q = 1 is the Shannon limit, which the Tsallis formula divides by zero at), got -2}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = -2.0 : f32, threshold = 0.5 : f32} : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @dynmole_q_zero(%p: tensor<?x8xf32>, %i: tensor<?x2xi32>, %v: tensor<?x2xf32>) {
  // expected-error @+1 {{'q' (the entropic index) must be finite, > 0 and != 1}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 0.0 : f32, threshold = 0.5 : f32} : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @dynmole_threshold(%p: tensor<?x8xf32>, %i: tensor<?x2xi32>, %v: tensor<?x2xf32>) {
  // expected-error @+1 {{'threshold' must be finite and >= 0 (an entropy), got -5.000000e-01}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, threshold = -0.5 : f32} : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @dynmole_epsilon(%p: tensor<?x8xf32>, %i: tensor<?x2xi32>, %v: tensor<?x2xf32>) {
  // expected-error @+1 {{'epsilon' must be finite and >= 0, got -1}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, threshold = 0.5 : f32, epsilon = -1.0 : f32} : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @dynmole_dynamic_experts(%p: tensor<?x?xf32>, %i: tensor<?x2xi32>, %v: tensor<?x2xf32>) {
  // expected-error @+1 {{the number of experts (dimension 1 of 'probs') must be static: the result has one slot per expert}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, threshold = 0.5 : f32} : tensor<?x?xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @dynmole_normalized_one_expert(%p: tensor<?x1xf32>, %i: tensor<?x1xi32>, %v: tensor<?x1xf32>) {
  // expected-error @+1 {{'normalized' needs at least 2 experts in 'probs' (the largest entropy of 1 candidate is 0), got 1}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, threshold = 0.5 : f32, normalized} : tensor<?x1xf32>, tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  return
}

// -----

func.func @dynmole_too_many_slots(%p: tensor<?x4xf32>, %i: tensor<?x5xi32>, %v: tensor<?x5xf32>) {
  // expected-error @+1 {{'sparse_ids' has 5 slots, more than the 4 experts of 'probs' (the result has one slot per expert)}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, threshold = 0.5 : f32} : tensor<?x4xf32>, tensor<?x5xi32>, tensor<?x5xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return
}

// -----

func.func @dynmole_values_shape(%p: tensor<?x8xf32>, %i: tensor<?x2xi32>, %v: tensor<?x3xf32>) {
  // expected-error @+1 {{'sparse_values' dimension 1 (slots of 'sparse_ids') must be 2, got 3}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, threshold = 0.5 : f32} : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x3xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return
}

// -----

func.func @dynmole_tokens(%p: tensor<4x8xf32>, %i: tensor<5x2xi32>, %v: tensor<5x2xf32>) {
  // expected-error @+1 {{'sparse_ids' dimension 0 (tokens of 'probs') must be 4, got 5}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, threshold = 0.5 : f32} : tensor<4x8xf32>, tensor<5x2xi32>, tensor<5x2xf32> -> tensor<4x8xi32>, tensor<4x8xf32>
  return
}

// -----

func.func @dynmole_result_width(%p: tensor<?x8xf32>, %i: tensor<?x2xi32>, %v: tensor<?x2xf32>) {
  // expected-error @+1 {{'ids' dimension 1 (one slot per expert of 'probs') must be 8, got 2}}
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, threshold = 0.5 : f32} : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @non_gated_with_gate(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>, %gub: tensor<4x64xf32>) {
  // expected-error @+1 {{'gate' given with 'non_gated' (a non-gated FFN computes down(act(up x + up_bias)) and has no gate); drop 'gate' or 'non_gated'}}
  %0 = moe.expert_ffn %x, %o non_gated gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_with_gate_up(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>, %gub: tensor<4x64xf32>) {
  // expected-error @+1 {{'gate_up' given with 'non_gated'}}
  %0 = moe.expert_ffn %x, %o non_gated gate_up(%gu) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x64x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_with_gate_bias(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>, %gub: tensor<4x64xf32>) {
  // expected-error @+1 {{'gate_bias' given with 'non_gated'}}
  %0 = moe.expert_ffn %x, %o non_gated up(%u) down(%d) gate_bias(%b) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_with_gate_up_bias(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>, %gub: tensor<4x64xf32>) {
  // expected-error @+1 {{'gate_up_bias' given with 'non_gated'}}
  %0 = moe.expert_ffn %x, %o non_gated up(%u) down(%d) gate_up_bias(%gub) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_without_up(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>, %gub: tensor<4x64xf32>) {
  // expected-error @+1 {{'non_gated' needs an 'up' projection (the input of the activation)}}
  %0 = moe.expert_ffn %x, %o non_gated down(%d) {activation = #moe.activation<relu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_swiglu(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>, %gub: tensor<4x64xf32>) {
  // expected-error @+1 {{activation 'swiglu_clamped' needs a gate; 'non_gated' takes silu, gelu, gelu_tanh or relu}}
  %0 = moe.expert_ffn %x, %o non_gated up(%u) down(%d) {activation = #moe.activation<swiglu_clamped>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_interleaved(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>, %gub: tensor<4x64xf32>) {
  // expected-error @+1 {{'gate_up_layout' interleaved needs a fused 'gate_up' projection ('non_gated' has none)}}
  %0 = moe.expert_ffn %x, %o non_gated up(%u) down(%d) {activation = #moe.activation<relu>, gate_up_layout = #moe.gate_up_layout<interleaved>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @up_without_gate(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %gu: tensor<4x64x64xf32>, %b: tensor<4x32xf32>, %gub: tensor<4x64xf32>) {
  // expected-error @+1 {{'up' needs its partner 'gate' (or 'non_gated' for down(act(up x)))}}
  %0 = moe.expert_ffn %x, %o up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

// Non-gated shapes: 'up' reads the hidden size, 'down' reads up's width,
// the up bias is [E, I].
func.func @non_gated_up_hidden(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %u: tensor<4x32x48xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'up' input size must be the hidden size of 'input' (64), got 48}}
  %0 = moe.expert_ffn %x, %o non_gated up(%u) down(%d) {activation = #moe.activation<relu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x48xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_down_width(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x16xf32>) {
  // expected-error @+1 {{'down' has intermediate size (input side) = 16 but the gate/up projection has 32}}
  %0 = moe.expert_ffn %x, %o non_gated up(%u) down(%d) {activation = #moe.activation<relu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x64x16xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_up_bias(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>, %b: tensor<4x64xf32>) {
  // expected-error @+1 {{'up_bias' dimension 1 (intermediate size) must be 32, got 64}}
  %0 = moe.expert_ffn %x, %o non_gated up(%u) down(%d) up_bias(%b) {activation = #moe.activation<relu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @non_gated_ffn_gate(%x: tensor<?x64xf32>, %g: tensor<32x64xf32>, %d: tensor<64x32xf32>) {
  // expected-error @+1 {{'moe.ffn' op 'gate' given with 'non_gated'}}
  %0 = moe.ffn %x non_gated gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

// A selection over the values of another selection (slot order): its ids
// would be slot numbers (every token routed to experts 0 and 1).
func.func @threshold_on_topk_values(%s: tensor<?x8xf32>) {
  // expected-note @+1 {{the slot-ordered values come from here}}
  %ti, %tv = moe.topk %s {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %p = moe.softmax %tv : tensor<?x2xf32>
  // expected-error @+1 {{'moe.threshold' op selects from the slot-ordered output of 'moe.topk' (column s is a token's s-th chosen expert, not expert s), so its ids would be slot numbers: select from the per-expert scores, or post-process the selected values with moe.normalize, moe.scale or moe.softmax}}
  %i, %v = moe.threshold %p {max_k = 2 : i64} : tensor<?x2xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @widths_count(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'widths' has 3 entries but the projections hold E = 4 experts (one width per expert)}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>, widths = array<i64: 8, 32, 32>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @widths_zero(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'widths' entry 1 is 0; an expert's intermediate size must be >= 1 (skip tokens with a null expert, moe.drop_null_experts)}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>, widths = array<i64: 8, 0, 32, 16>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @widths_negative(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'widths' entry 0 is -4; an expert's intermediate size must be >= 1}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>, widths = array<i64: -4, 8, 32, 16>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @widths_too_wide(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{'widths' entry 2 is 33, more than the stacked intermediate size 32 of the projections}}
  %0 = moe.expert_ffn %x, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>, widths = array<i64: 8, 32, 33, 16>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @widths_too_wide_in_out(%x: tensor<?x64xf32>, %o: tensor<5xi32>, %u: tensor<4x64x16xf32>, %d: tensor<4x16x64xf32>) {
  // expected-error @+1 {{'widths' entry 3 is 17, more than the stacked intermediate size 16 of the projections}}
  %0 = moe.expert_ffn %x, %o non_gated up(%u) down(%d) {activation = #moe.activation<relu>, weight_layout = #moe.weight_layout<in_out>, widths = array<i64: 16, 8, 4, 17>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x64x16xf32>, tensor<4x16x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @capacity_factor_zero(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.capacity' op 'capacity_factor' must be finite and > 0 (each expert takes ceil(capacity_factor * T * K / num_experts) slots), got 0}}
  %ci, %cw = moe.capacity %i, %w {capacity_factor = 0.0 : f32, num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @capacity_factor_negative(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'capacity_factor' must be finite and > 0 (each expert takes ceil(capacity_factor * T * K / num_experts) slots), got -1.500000e+00}}
  %ci, %cw = moe.capacity %i, %w {capacity_factor = -1.5 : f32, num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @capacity_factor_inf(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'capacity_factor' must be finite and > 0}}
  %ci, %cw = moe.capacity %i, %w {capacity_factor = 0x7F800000 : f32, num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @capacity_no_experts(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.capacity' op 'num_experts' must be >= 1, got 0}}
  %ci, %cw = moe.capacity %i, %w {capacity_factor = 1.0 : f32, num_experts = 0 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @capacity_weights_shape(%i: tensor<?x2xi32>, %w: tensor<?x3xf32>) {
  // expected-error @+1 {{'weights' dimension 1 (slots of 'ids') must be 2, got 3}}
  %ci, %cw = moe.capacity %i, %w {capacity_factor = 1.0 : f32, num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x3xf32>
  return
}

// -----

func.func @capacity_id_range(%s: tensor<?x8xf32>) {
  // expected-note @+1 {{the ids are produced here}}
  %ids, %v = moe.topk %s {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // expected-error @+1 {{'ids' holds ids in [0, 8) (from 'moe.topk') but 'num_experts' is 4: every id must be in [0, 4) or -1}}
  %ci, %cw = moe.capacity %ids, %v {capacity_factor = 1.0 : f32, num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @capacity_after_expert_choice(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'moe.capacity' is a second cross-token selection in one router}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x4xi32>, tensor<?x4xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %i, %v = moe.expert_choice %l {capacity = 2 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    // expected-note @+1 {{the op is here}}
    %i2, %v2 = moe.capacity %i, %v {capacity_factor = 1.0 : f32, num_experts = 4 : i64} : tensor<?x4xi32>, tensor<?x4xf32>
    moe.yield %i2, %v2 : tensor<?x4xi32>, tensor<?x4xf32>
  }
  return
}

// -----

func.func @sinkhorn_no_iterations(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.sinkhorn' op 'iterations' (Sinkhorn normalisation rounds) must be >= 1, got 0}}
  %b = moe.sinkhorn %s {iterations = 0 : i64, epsilon = 1.0 : f32} : tensor<?x8xf32>
  return
}

// -----

func.func @sinkhorn_negative_iterations(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'iterations' (Sinkhorn normalisation rounds) must be >= 1, got -2}}
  %b = moe.sinkhorn %s {iterations = -2 : i64, epsilon = 1.0 : f32} : tensor<?x8xf32>
  return
}

// -----

func.func @sinkhorn_epsilon_zero(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.sinkhorn' op 'epsilon' (the temperature: exp((s - max) / epsilon)) must be finite and > 0, got 0}}
  %b = moe.sinkhorn %s {iterations = 3 : i64, epsilon = 0.0 : f32} : tensor<?x8xf32>
  return
}

// -----

func.func @sinkhorn_epsilon_negative(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'epsilon' (the temperature: exp((s - max) / epsilon)) must be finite and > 0, got -5.000000e-01}}
  %b = moe.sinkhorn %s {iterations = 3 : i64, epsilon = -0.5 : f32} : tensor<?x8xf32>
  return
}

// -----

func.func @sinkhorn_epsilon_nan(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'epsilon' (the temperature: exp((s - max) / epsilon)) must be finite and > 0, got nan}}
  %b = moe.sinkhorn %s {iterations = 3 : i64, epsilon = 0x7FC00000 : f32} : tensor<?x8xf32>
  return
}

// -----

func.func @sinkhorn_result_type(%s: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.sinkhorn' op requires the same type for all operands and results}}
  %b = "moe.sinkhorn"(%s) {iterations = 3 : i64, epsilon = 1.0 : f32} : (tensor<?x8xf32>) -> tensor<?x4xf32>
  return
}

// -----

func.func @sinkhorn_then_capacity(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'moe.capacity' is a second cross-token selection in one router (the routing kernel ranks the batch once, after 'moe.sinkhorn')}}
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %b = moe.sinkhorn %l {iterations = 2 : i64, epsilon = 1.0 : f32} : tensor<?x4xf32>
    %i, %v = moe.topk %b {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    // expected-note @+1 {{the op is here}}
    %i2, %v2 = moe.capacity %i, %v {capacity_factor = 1.0 : f32, num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i2, %v2 : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @capacity_negative_experts(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.capacity' op 'num_experts' must be >= 1, got -3}}
  %ci, %cw = moe.capacity %i, %w {capacity_factor = 1.0 : f32, num_experts = -3 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @cosine_epsilon(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{'epsilon' must be > 0 and finite, got 0}}
  %0 = moe.router_linear %x, %w {normalize = #moe.router_normalize<both>, epsilon = 0.0 : f32} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @cosine_scale(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{'scale' must be > 0 and finite, got -2}}
  %0 = moe.router_linear %x, %w {normalize = #moe.router_normalize<input>, scale = -2.0 : f32} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @cosine_scale_without_normalize(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{'scale' (4.000000e+00) applies to a cosine router only; set 'normalize' to input, weight or both}}
  %0 = moe.router_linear %x, %w {scale = 4.0 : f32} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @cosine_normalize_kind(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+2 {{expected ::mlir::moe::RouterNormalize to be one of: none, input, weight, both}}
  // expected-error @+1 {{failed to parse MoE_RouterNormalizeAttr parameter 'value'}}
  %0 = moe.router_linear %x, %w {normalize = #moe.router_normalize<rows>} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @sequence_scores_width(%s: tensor<?x8xf32>, %g: tensor<?x4xf32>, %m: tensor<?xi32>) {
  // expected-error @+1 {{'sequence_scores' dimension 1 (experts, the columns of 'input') must be 8, got 4}}
  %0 = moe.add_sequence_scores %s, %g, %m : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?xi32>
  return
}

// -----

func.func @sequence_map_longer(%s: tensor<7x8xf32>, %g: tensor<?x8xf32>, %m: tensor<9xi32>) {
  // expected-error @+1 {{'sequence_map' has 9 entries: the sequence map is longer than T = 7 (the tokens of 'input'); it needs one entry per token}}
  %0 = moe.add_sequence_scores %s, %g, %m : tensor<7x8xf32>, tensor<?x8xf32>, tensor<9xi32>
  return
}

// -----

func.func @sequence_map_shorter(%s: tensor<7x8xf32>, %g: tensor<?x8xf32>, %m: tensor<5xi32>) {
  // expected-error @+1 {{the sequence map is shorter than T = 7}}
  %0 = moe.add_sequence_scores %s, %g, %m : tensor<7x8xf32>, tensor<?x8xf32>, tensor<5xi32>
  return
}

// -----

func.func @sequence_map_type(%s: tensor<?x8xf32>, %g: tensor<?x8xf32>, %m: tensor<?xf32>) {
  // expected-error @+1 {{operand #2 must be 1D tensor of 32-bit signless integer values}}
  %0 = moe.add_sequence_scores %s, %g, %m : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xf32>
  return
}

// -----

func.func @sequence_scores_type(%s: tensor<?x8xf32>, %g: tensor<?x8xbf16>, %m: tensor<?xi32>) {
  // expected-error @+1 {{operand #1 must be 2D tensor of 32-bit float values}}
  %0 = moe.add_sequence_scores %s, %g, %m : tensor<?x8xf32>, tensor<?x8xbf16>, tensor<?xi32>
  return
}

// -----

func.func @sequence_scores_factor(%s: tensor<?x8xf32>, %g: tensor<?x8xf32>, %m: tensor<?xi32>) {
  // expected-error @+1 {{'factor' must be finite, got INF}}
  %0 = moe.add_sequence_scores %s, %g, %m {factor = 0x7F800000 : f32} : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xi32>
  return
}

// -----

func.func @extra_input_as_row(%x: tensor<?x64xf32>, %g: tensor<?x8xf32>, %m: tensor<?xi32>) {
  // expected-error @+1 {{'moe.fused_route' op body cannot be generated as one routing kernel: 'moe.topk' reads an extra layer input where a score row is expected (only moe.add_sequence_scores reads extra inputs)}}
  %ids, %ws, %c, %o, %rows = moe.fused_route %x inputs(%g, %m : tensor<?x8xf32>, tensor<?xi32>) {num_experts = 8 : i64} : tensor<?x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<8xi32>, tensor<9xi32>, tensor<?xi32> {
  ^bb0(%t: tensor<?x64xf32>, %bg: tensor<?x8xf32>, %bm: tensor<?xi32>):
    // expected-note @+1 {{the op is here}}
    %i, %v = moe.topk %bg {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @sequence_scores_not_extra(%x: tensor<?x64xf32>, %g: tensor<?x8xf32>, %m: tensor<?xi32>) {
  // expected-error @+1 {{'moe.fused_route' op body cannot be generated as one routing kernel: 'moe.add_sequence_scores' must read its sequence scores and map from the layer's extra inputs}}
  %ids, %ws, %c, %o, %rows = moe.fused_route %x inputs(%m : tensor<?xi32>) {num_experts = 8 : i64} : tensor<?x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<8xi32>, tensor<9xi32>, tensor<?xi32> {
  ^bb0(%t: tensor<?x64xf32>, %bm: tensor<?xi32>):
    %w = arith.constant dense<1.0> : tensor<8x64xf32>
    %l = moe.router_linear %t, %w : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    // expected-note @+1 {{the op is here}}
    %s = moe.add_sequence_scores %l, %l, %bm : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xi32>
    %i, %v = moe.topk %s {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @quant_no_scale(%xs: tensor<?x256xbf16>, %off: tensor<3xi32>,
    %g: tensor<2x128x256xf8E4M3FN>, %d: tensor<2x256x128xf8E4M3FN>,
    %s: tensor<2x1x2xf32>, %sd: tensor<2x2x1xf32>) -> tensor<?x256xbf16> {
  // expected-error @+1 {{'up' is quantized ('f8E4M3FN') but has no 'up_scale' (its block scales)}}
  %0 = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) gate_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x256xbf16>, tensor<3xi32>, tensor<2x128x256xf8E4M3FN>, tensor<2x128x256xf8E4M3FN>, tensor<2x256x128xf8E4M3FN>, tensor<2x1x2xf32>, tensor<2x2x1xf32>) -> tensor<?x256xbf16>
  return %0 : tensor<?x256xbf16>
}

// -----

func.func @quant_scale_unquantized(%xs: tensor<?x256xbf16>, %off: tensor<3xi32>,
    %g: tensor<2x128x256xbf16>, %d: tensor<2x256x128xbf16>,
    %sd: tensor<2x2x1xf32>) -> tensor<?x256xbf16> {
  // expected-error @+1 {{'down_scale' given but 'down' is not quantized (element type 'bf16'; scales apply to f8E4M3FN or f4E2M1FN)}}
  %0 = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x256xbf16>, tensor<3xi32>, tensor<2x128x256xbf16>, tensor<2x128x256xbf16>, tensor<2x256x128xbf16>, tensor<2x2x1xf32>) -> tensor<?x256xbf16>
  return %0 : tensor<?x256xbf16>
}

// -----

func.func @quant_scale_without_projection(%xs: tensor<?x256xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x256x256xf8E4M3FN>, %d: tensor<2x256x128xf8E4M3FN>,
    %s: tensor<2x2x2xf32>, %sd: tensor<2x2x1xf32>) -> tensor<?x256xbf16> {
  // expected-error @+1 {{'gate_scale' given without a 'gate' projection}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_scale(%s) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x256xbf16>, tensor<3xi32>, tensor<2x256x256xf8E4M3FN>, tensor<2x256x128xf8E4M3FN>, tensor<2x2x2xf32>, tensor<2x2x2xf32>, tensor<2x2x1xf32>) -> tensor<?x256xbf16>
  return %0 : tensor<?x256xbf16>
}

// -----

func.func @quant_no_block(%xs: tensor<?x256xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x256x256xf8E4M3FN>, %d: tensor<2x256x128xf8E4M3FN>,
    %s: tensor<2x2x2xf32>, %sd: tensor<2x2x1xf32>) -> tensor<?x256xbf16> {
  // expected-error @+1 {{quantized projections need 'quant_block' (the rows x columns of the weight block one scale covers)}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>} : (tensor<?x256xbf16>, tensor<3xi32>, tensor<2x256x256xf8E4M3FN>, tensor<2x256x128xf8E4M3FN>, tensor<2x2x2xf32>, tensor<2x2x1xf32>) -> tensor<?x256xbf16>
  return %0 : tensor<?x256xbf16>
}

// -----

func.func @quant_block_unquantized(%xs: tensor<?x64xbf16>, %off: tensor<3xi32>,
    %g: tensor<2x32x64xbf16>, %d: tensor<2x64x32xbf16>) -> tensor<?x64xbf16> {
  // expected-error @+1 {{'quant_block' given but no projection is quantized (f8E4M3FN or f4E2M1FN)}}
  %0 = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x64xbf16>, tensor<3xi32>, tensor<2x32x64xbf16>, tensor<2x32x64xbf16>, tensor<2x64x32xbf16>) -> tensor<?x64xbf16>
  return %0 : tensor<?x64xbf16>
}

// -----

func.func @quant_block_rank(%xs: tensor<?x256xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x256x256xf8E4M3FN>, %d: tensor<2x256x128xf8E4M3FN>,
    %s: tensor<2x2x2xf32>, %sd: tensor<2x2x1xf32>) -> tensor<?x256xbf16> {
  // expected-error @+1 {{'quant_block' must be two sizes >= 1 (rows, columns of the weight as stored), got 1 entries}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128>} : (tensor<?x256xbf16>, tensor<3xi32>, tensor<2x256x256xf8E4M3FN>, tensor<2x256x128xf8E4M3FN>, tensor<2x2x2xf32>, tensor<2x2x1xf32>) -> tensor<?x256xbf16>
  return %0 : tensor<?x256xbf16>
}

// -----

func.func @quant_scale_shape(%xs: tensor<?x200xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x256x200xf8E4M3FN>, %d: tensor<2x200x128xf8E4M3FN>,
    %s: tensor<2x2x1xf32>, %sd: tensor<2x2x1xf32>) -> tensor<?x200xbf16> {
  // expected-error @+1 {{'gate_up_scale' dimension 2 must be ceil(200 / 128) = 2 (blocks of 'gate_up' dimension 2), got 1}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x200xbf16>, tensor<3xi32>, tensor<2x256x200xf8E4M3FN>, tensor<2x200x128xf8E4M3FN>, tensor<2x2x1xf32>, tensor<2x2x1xf32>) -> tensor<?x200xbf16>
  return %0 : tensor<?x200xbf16>
}

// -----

func.func @quant_scale_experts(%xs: tensor<?x256xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x256x256xf8E4M3FN>, %d: tensor<2x256x128xf8E4M3FN>,
    %s: tensor<3x2x2xf32>, %sd: tensor<2x2x1xf32>) -> tensor<?x256xbf16> {
  // expected-error @+1 {{'gate_up_scale' dimension 0 (experts) must be 2, got 3}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x256xbf16>, tensor<3xi32>, tensor<2x256x256xf8E4M3FN>, tensor<2x256x128xf8E4M3FN>, tensor<3x2x2xf32>, tensor<2x2x1xf32>) -> tensor<?x256xbf16>
  return %0 : tensor<?x256xbf16>
}

// -----

func.func @quant_fp8_scale_type(%xs: tensor<?x256xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x256x256xf8E4M3FN>, %d: tensor<2x256x128xf8E4M3FN>,
    %s: tensor<2x2x2xf8E8M0FNU>, %sd: tensor<2x2x1xf32>) -> tensor<?x256xbf16> {
  // expected-error @+1 {{'gate_up_scale' of 'f8E4M3FN' weights must have element type 'f32', got 'f8E8M0FNU'}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x256xbf16>, tensor<3xi32>, tensor<2x256x256xf8E4M3FN>, tensor<2x256x128xf8E4M3FN>, tensor<2x2x2xf8E8M0FNU>, tensor<2x2x1xf32>) -> tensor<?x256xbf16>
  return %0 : tensor<?x256xbf16>
}

// -----

func.func @quant_mxfp4_block(%xs: tensor<?x64xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x64x64xf4E2M1FN>, %d: tensor<2x64x32xf4E2M1FN>,
    %s: tensor<2x4x2xf8E8M0FNU>, %sd: tensor<2x4x1xf8E8M0FNU>) -> tensor<?x64xbf16> {
  // expected-error @+1 {{f4E2M1FN (MXFP4) weights need 'quant_block' = [1, 32] (32 values along the input dimension with weight_layout out_in), got [16, 32]}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 16, 32>} : (tensor<?x64xbf16>, tensor<3xi32>, tensor<2x64x64xf4E2M1FN>, tensor<2x64x32xf4E2M1FN>, tensor<2x4x2xf8E8M0FNU>, tensor<2x4x1xf8E8M0FNU>) -> tensor<?x64xbf16>
  return %0 : tensor<?x64xbf16>
}

// -----

func.func @quant_mxfp4_partial_group(%xs: tensor<?x48xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x64x48xf4E2M1FN>, %d: tensor<2x48x32xf4E2M1FN>,
    %s: tensor<2x64x2xf8E8M0FNU>, %sd: tensor<2x48x1xf8E8M0FNU>) -> tensor<?x48xbf16> {
  // expected-error @+1 {{'gate_up' is f4E2M1FN (MXFP4) with input size 48, not a multiple of its 32-value block}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 1, 32>} : (tensor<?x48xbf16>, tensor<3xi32>, tensor<2x64x48xf4E2M1FN>, tensor<2x48x32xf4E2M1FN>, tensor<2x64x2xf8E8M0FNU>, tensor<2x48x1xf8E8M0FNU>) -> tensor<?x48xbf16>
  return %0 : tensor<?x48xbf16>
}

// -----

func.func @quant_mxfp4_scale_type(%xs: tensor<?x64xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x64x64xf4E2M1FN>, %d: tensor<2x64x32xf4E2M1FN>,
    %s: tensor<2x64x2xf32>, %sd: tensor<2x64x1xf8E8M0FNU>) -> tensor<?x64xbf16> {
  // expected-error @+1 {{'gate_up_scale' of 'f4E2M1FN' weights must have element type 'f8E8M0FNU', got 'f32'}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 1, 32>} : (tensor<?x64xbf16>, tensor<3xi32>, tensor<2x64x64xf4E2M1FN>, tensor<2x64x32xf4E2M1FN>, tensor<2x64x2xf32>, tensor<2x64x1xf8E8M0FNU>) -> tensor<?x64xbf16>
  return %0 : tensor<?x64xbf16>
}

// -----

func.func @quant_mixed_types(%xs: tensor<?x64xbf16>, %off: tensor<3xi32>,
    %gu: tensor<2x64x64xf4E2M1FN>, %d: tensor<2x64x32xf8E4M3FN>,
    %s: tensor<2x64x2xf8E8M0FNU>, %sd: tensor<2x64x1xf32>) -> tensor<?x64xbf16> {
  // expected-error @+1 {{'down' element type 'f8E4M3FN' differs from the other projections' 'f4E2M1FN'}}
  %0 = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 1, 32>} : (tensor<?x64xbf16>, tensor<3xi32>, tensor<2x64x64xf4E2M1FN>, tensor<2x64x32xf8E4M3FN>, tensor<2x64x2xf8E8M0FNU>, tensor<2x64x1xf32>) -> tensor<?x64xbf16>
  return %0 : tensor<?x64xbf16>
}

// -----

func.func @quant_scale_rank(%x: tensor<?x256xbf16>,
    %g: tensor<128x256xf8E4M3FN>, %d: tensor<256x128xf8E4M3FN>,
    %s: tensor<1x1x2xf32>, %sd: tensor<2x1xf32>) -> tensor<?x256xbf16> {
  // expected-error @+1 {{'gate_scale' must have rank 2}}
  %0 = moe.ffn %x gate(%g) up(%g) down(%d) gate_scale(%s) up_scale(%s) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x256xbf16>, tensor<128x256xf8E4M3FN>, tensor<128x256xf8E4M3FN>, tensor<256x128xf8E4M3FN>, tensor<1x1x2xf32>, tensor<1x1x2xf32>, tensor<2x1xf32>) -> tensor<?x256xbf16>
  return %0 : tensor<?x256xbf16>
}

// -----

func.func @quant_router_weight(%x: tensor<?x64xbf16>) -> tensor<?x8xf32> {
  %w = moe.weight ["r"] from ["m.safetensors"] : tensor<8x64xf8E4M3FN>
  // expected-error @+1 {{operand #1 must be ranked tensor of 32-bit float or bfloat16 type or 16-bit float values}}
  %0 = moe.router_linear %x, %w : (tensor<?x64xbf16>, tensor<8x64xf8E4M3FN>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

func.func @similarity_mix_temperature(%x: tensor<?x64xf32>, %p: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'temperature' (the similarity softmax: x_t . x_j / temperature) must be finite and > 0, got 0}}
  %m = moe.similarity_mix %x, %p {temperature = 0.0 : f32} : tensor<?x64xf32>, tensor<?x8xf32>
  return %m : tensor<?x8xf32>
}

// -----

func.func @similarity_mix_tokens(%x: tensor<7x64xf32>, %p: tensor<5x8xf32>) -> tensor<5x8xf32> {
  // expected-error @+1 {{'probs' dimension 0 (tokens of 'input') must be 7, got 5}}
  %m = moe.similarity_mix %x, %p {temperature = 1.0 : f32} : tensor<7x64xf32>, tensor<5x8xf32>
  return %m : tensor<5x8xf32>
}

// -----

func.func @similarity_mix_rank(%x: tensor<64xf32>, %p: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'input' must have rank 2 ([T, H]: the token vectors), got rank 1}}
  %m = moe.similarity_mix %x, %p {temperature = 1.0 : f32} : tensor<64xf32>, tensor<?x8xf32>
  return %m : tensor<?x8xf32>
}

// -----

func.func @similarity_mix_slots(%x: tensor<?x64xf32>, %l: tensor<?x8xf32>) -> tensor<?x2xf32> {
  %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // expected-error @+1 {{'probs' is the slot-ordered output of 'moe.topk' (column s is a token's s-th chosen expert): mixing needs rows over experts}}
  %m = moe.similarity_mix %x, %v {temperature = 1.0 : f32} : tensor<?x64xf32>, tensor<?x2xf32>
  return %m : tensor<?x2xf32>
}

// -----

func.func @similarity_mix_not_input(%x: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.fused_route' op body cannot be generated as one routing kernel: 'moe.similarity_mix' must mix by the routed tokens (the body argument)}}
  %ids, %ws, %c, %o, %rows = moe.fused_route %x {num_experts = 8 : i64} : tensor<?x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<8xi32>, tensor<9xi32>, tensor<?xi32> {
  ^bb0(%t: tensor<?x64xf32>):
    %w = arith.constant dense<1.0> : tensor<8x64xf32>
    %l = moe.router_linear %t, %w : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    %p = moe.softmax %l : tensor<?x8xf32>
    // expected-note @+1 {{the op is here}}
    %m = moe.similarity_mix %l, %p {temperature = 1.0 : f32} : tensor<?x8xf32>, tensor<?x8xf32>
    %i, %v = moe.topk %m {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @similarity_mix_after_cross_token(%x: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.fused_route' op body cannot be generated as one routing kernel: 'moe.similarity_mix' comes after the cross-token selection 'moe.sinkhorn': the routing kernel mixes before it}}
  %ids, %ws, %c, %o, %rows = moe.fused_route %x {num_experts = 8 : i64} : tensor<?x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<8xi32>, tensor<9xi32>, tensor<?xi32> {
  ^bb0(%t: tensor<?x64xf32>):
    %w = arith.constant dense<1.0> : tensor<8x64xf32>
    %l = moe.router_linear %t, %w : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    %b = moe.sinkhorn %l {iterations = 2 : i64, epsilon = 1.0 : f32} : tensor<?x8xf32>
    // expected-note @+1 {{the op is here}}
    %m = moe.similarity_mix %t, %b {temperature = 1.0 : f32} : tensor<?x64xf32>, tensor<?x8xf32>
    %i, %v = moe.topk %m {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @similarity_mix_twice(%x: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.fused_route' op body cannot be generated as one routing kernel: 'moe.similarity_mix' is a second moe.similarity_mix in one router (the routing kernel mixes once)}}
  %ids, %ws, %c, %o, %rows = moe.fused_route %x {num_experts = 8 : i64} : tensor<?x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<8xi32>, tensor<9xi32>, tensor<?xi32> {
  ^bb0(%t: tensor<?x64xf32>):
    %w = arith.constant dense<1.0> : tensor<8x64xf32>
    %l = moe.router_linear %t, %w : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    %p = moe.softmax %l : tensor<?x8xf32>
    %m = moe.similarity_mix %t, %p {temperature = 1.0 : f32} : tensor<?x64xf32>, tensor<?x8xf32>
    // expected-note @+1 {{the op is here}}
    %m2 = moe.similarity_mix %t, %m {temperature = 1.0 : f32} : tensor<?x64xf32>, tensor<?x8xf32>
    %i, %v = moe.topk %m2 {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return
}

// -----

func.func @gru_cell_state_width(%u: tensor<?x16xf32>, %h: tensor<?x24xf32>, %wi: tensor<96x16xf32>, %wh: tensor<96x32xf32>) -> tensor<?x24xf32> {
  // expected-error @+1 {{'state' dimension 1 (the state width S, weight_hh's rows / 3) must be 32, got 24}}
  %h1 = moe.gru_cell %u, %h weights(%wi, %wh) : tensor<?x16xf32>, tensor<?x24xf32>, tensor<96x16xf32>, tensor<96x32xf32>
  return %h1 : tensor<?x24xf32>
}

// -----

func.func @gru_cell_gate_rows(%u: tensor<?x16xf32>, %h: tensor<?x32xf32>, %wi: tensor<95x16xf32>, %wh: tensor<95x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'weight_hh' has 95 rows; expected 3S (the r, z and n gates' rows of a state of width S)}}
  %h1 = moe.gru_cell %u, %h weights(%wi, %wh) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<95x16xf32>, tensor<95x32xf32>
  return %h1 : tensor<?x32xf32>
}

// -----

func.func @gru_cell_hh_columns(%u: tensor<?x16xf32>, %h: tensor<?x32xf32>, %wi: tensor<96x16xf32>, %wh: tensor<96x16xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'weight_hh' dimension 1 (the state width S, weight_hh's rows / 3) must be 32, got 16}}
  %h1 = moe.gru_cell %u, %h weights(%wi, %wh) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x16xf32>, tensor<96x16xf32>
  return %h1 : tensor<?x32xf32>
}

// -----

func.func @gru_cell_ih(%u: tensor<?x16xf32>, %h: tensor<?x32xf32>, %wi: tensor<96x8xf32>, %wh: tensor<96x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'weight_ih' dimension 1 (the columns of 'input') must be 16, got 8}}
  %h1 = moe.gru_cell %u, %h weights(%wi, %wh) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x8xf32>, tensor<96x32xf32>
  return %h1 : tensor<?x32xf32>
}

// -----

func.func @gru_cell_ih_rows(%u: tensor<?x16xf32>, %h: tensor<?x32xf32>, %wi: tensor<48x16xf32>, %wh: tensor<96x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'weight_ih' dimension 0 (3S, the rows of 'weight_hh') must be 96, got 48}}
  %h1 = moe.gru_cell %u, %h weights(%wi, %wh) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<48x16xf32>, tensor<96x32xf32>
  return %h1 : tensor<?x32xf32>
}

// -----

func.func @gru_cell_tokens(%u: tensor<7x16xf32>, %h: tensor<5x32xf32>, %wi: tensor<96x16xf32>, %wh: tensor<96x32xf32>) -> tensor<5x32xf32> {
  // expected-error @+1 {{'state' dimension 0 (tokens of 'input') must be 7, got 5}}
  %h1 = moe.gru_cell %u, %h weights(%wi, %wh) : tensor<7x16xf32>, tensor<5x32xf32>, tensor<96x16xf32>, tensor<96x32xf32>
  return %h1 : tensor<5x32xf32>
}

// -----

func.func @gru_cell_bias(%u: tensor<?x16xf32>, %h: tensor<?x32xf32>, %wi: tensor<96x16xf32>, %wh: tensor<96x32xf32>, %b: tensor<32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'bias_ih' dimension 0 (3S, the rows of 'weight_hh') must be 96, got 32}}
  %h1 = moe.gru_cell %u, %h weights(%wi, %wh) biases(%b, %b) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x16xf32>, tensor<96x32xf32>, tensor<32xf32>, tensor<32xf32>
  return %h1 : tensor<?x32xf32>
}

// -----

func.func @gru_cell_one_bias(%u: tensor<?x16xf32>, %h: tensor<?x32xf32>, %wi: tensor<96x16xf32>, %wh: tensor<96x32xf32>, %b: tensor<96xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{takes both 'bias_ih' and 'bias_hh' or neither}}
  %h1 = "moe.gru_cell"(%u, %h, %wi, %wh, %b) {operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 0>} : (tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x16xf32>, tensor<96x32xf32>, tensor<96xf32>) -> tensor<?x32xf32>
  return %h1 : tensor<?x32xf32>
}
