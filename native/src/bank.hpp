// A bank written by `acsdk prepare`: one defect type's CFG text embeddings and semantic tokens, checked on load.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "tensor.hpp"

namespace acsdk {

constexpr const char* kBankSchema = "acsdk.bank/1";  // acsdk/inference/bank.py SCHEMA

// load_bank makes only banks whose tensors are [2, L, D] and hold their shapes' values; Synthesizer::run checks a
// bank built another way before reading it (InputError naming the bank and the field otherwise).
struct Bank {
  Tensor text_embeds;      // [2, L, D]: negative prompt, prompt
  Tensor semantic_tokens;  // [2, T, D]: unconditional, reference
  nlohmann::json info;     // bank.json
};

// Reads BANK/bank.json and BANK/bank.safetensors; refuses an unknown schema, tensors whose sha256 differs from
// the recorded one, and a bank prepared for another engine dir (its manifest digest).
Bank load_bank(const std::string& dir, const std::string& engine_manifest_sha256);

}  // namespace acsdk
