#include "bank.hpp"

#include <filesystem>

#include "errors.hpp"
#include "files.hpp"
#include "json_read.hpp"
#include "safetensors.hpp"

namespace fs = std::filesystem;

namespace acsdk {

namespace {

Bank read_bank(const std::string& dir, const std::string& engine_manifest_sha256) {
  const std::string info_file = (fs::path(dir) / "bank.json").string();
  const std::string tensors_file = (fs::path(dir) / "bank.safetensors").string();
  // path_kind, not std::filesystem: a directory this user may not search is an InputError naming --bank
  if (path_kind(info_file, "bank") != PathKind::kFile || path_kind(tensors_file, "bank") != PathKind::kFile)
    throw InputError("bank", "a directory written by `acsdk prepare` (bank.json, bank.safetensors)", "'" + dir + "'");
  Bank bank;
  try {
    bank.info = nlohmann::json::parse(read_file(info_file, "bank"));
  } catch (const nlohmann::json::exception& e) {
    throw InputError("bank", "a readable bank.json", "'" + info_file + "': " + e.what());
  }
  if (!bank.info.is_object())
    throw InputError("bank", "a bank.json written by `acsdk prepare` (a JSON object)",
                     "'" + info_file + "' holding " + json_read::shown(bank.info));
  auto field = [&](const char* key) {  // a string field, or what the file holds there (null where absent)
    const auto it = bank.info.find(key);
    return it == bank.info.end() ? nlohmann::json() : *it;
  };
  if (field("schema") != kBankSchema) throw InputError("bank", std::string("schema ") + kBankSchema, json_read::shown(field("schema")));
  const std::string bytes = read_file(tensors_file, "bank");  // read once: the bytes hashed are the bytes parsed
  if (field("tensors_sha256") != sha256_hex(bytes))
    throw IntegrityError("bank", "bank '" + dir + "': bank.safetensors differs from the sha256 recorded in bank.json");
  const auto recorded = field("engine_manifest_sha256");
  if (recorded != engine_manifest_sha256)
    throw InputError("bank",
                     "a bank prepared for this engine dir (manifest sha256 " + engine_manifest_sha256.substr(0, 16) +
                         "...)",
                     "one prepared for " + (recorded.is_string() ? recorded.get<std::string>().substr(0, 16) + "..."
                                                                 : recorded.dump()));
  auto tensors = parse_safetensors(bytes, tensors_file, "bank");
  for (const char* name : {"text_embeds", "semantic_tokens"}) {
    auto it = tensors.find(name);
    if (it == tensors.end() || it->second.shape.size() != 3 || it->second.shape[0] != 2)
      throw InputError("bank", std::string("bank.safetensors with ") + name + " of shape [2, N, D]",
                       it == tensors.end() ? "none" : shape_str(it->second.shape));
  }
  bank.text_embeds = std::move(tensors["text_embeds"]);
  bank.semantic_tokens = std::move(tensors["semantic_tokens"]);
  return bank;
}

}  // namespace

Bank load_bank(const std::string& dir, const std::string& engine_manifest_sha256) {
  try {
    return read_bank(dir, engine_manifest_sha256);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong type in bank.json
    throw InputError("bank", "a bank.json written by `acsdk prepare`", "'" + dir + "' (" + e.what() + ")");
  }
}

}  // namespace acsdk
