// fuzz_bank: load_bank on a bank dir written from the input: "<bank.json>\n--bank.safetensors--\n<bank.safetensors>"
// (no separator: all of it is bank.json and bank.safetensors is empty). The fuzzer cannot forge a sha256, so the
// harness stands in for `acsdk prepare`: "$TENSORS_SHA256" in bank.json becomes the sha256 of the safetensors part,
// and the engine dir's manifest digest is kEngineDigest (what the seeds record). A loaded bank must hold [2, L, D]
// tensors with their shapes' counts of values (the invariant Synthesizer::run relies on).
#include <cstdint>
#include <string>

#include "bank.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "fuzz_common.hpp"

namespace {

constexpr const char* kSeparator = "\n--bank.safetensors--\n";
constexpr const char* kPlaceholder = "$TENSORS_SHA256";
constexpr const char* kEngineDigest = "18116f2767aaca58bb67a4cd39c922786beebeac83dbbf62579970bc4cbddf7d";

void check(const acsdk::Tensor& t, const char* name) {
  if (t.shape.size() != 3 || t.shape[0] != 2) fuzz::broken(std::string("load_bank returned ") + name + " not [2, L, D]");
  size_t n = 1;
  for (const int64_t d : t.shape) {
    if (d < 0) fuzz::broken(std::string("load_bank returned ") + name + " with a negative dimension");
    n *= static_cast<size_t>(d);
  }
  if (t.data.size() != n) fuzz::broken(std::string("load_bank returned ") + name + " with another count of values");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t cut = input.find(kSeparator);
  std::string info = input.substr(0, cut);
  const std::string tensors = cut == std::string::npos ? "" : input.substr(cut + std::string(kSeparator).size());
  const std::string sha = acsdk::sha256_hex(tensors);
  for (size_t at = info.find(kPlaceholder); at != std::string::npos; at = info.find(kPlaceholder, at + sha.size()))
    info.replace(at, std::string(kPlaceholder).size(), sha);
  const std::string dir = fuzz::scratch() + "/bank";
  fuzz::put(dir + "/bank.json", info);
  fuzz::put(dir + "/bank.safetensors", tensors);
  try {
    const acsdk::Bank bank = acsdk::load_bank(dir, kEngineDigest);
    check(bank.text_embeds, "text_embeds");
    check(bank.semantic_tokens, "semantic_tokens");
    if (!bank.info.is_object()) fuzz::broken("load_bank returned info that is not a JSON object");
  } catch (const acsdk::Error&) {
  }
  return 0;
}
