//===- Registration.cpp - Anchor of the passes library --------------------===//
//
// Part of moe-opt. The passes themselves live one per file beside this one.
//
//===----------------------------------------------------------------------===//

#include "moe/passes/Passes.h"
