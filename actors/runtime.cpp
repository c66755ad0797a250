#include "actors/runtime.hpp"

#include <cstdlib>
#include <cstring>

#include "messages/version.hpp"
#include "platform/files.hpp"
#include "platform/host.hpp"
#include "platform/tpm.hpp"

namespace msiv2 {

const char* to_string(key_store_choice c) noexcept {
  switch (c) {
    case key_store_choice::software: return "software";
    case key_store_choice::tpm: return "tpm";
    case key_store_choice::automatic: return "auto";
  }
  return "unknown";
}

bool parse_key_store_choice(const std::string& text, key_store_choice& out) noexcept {
  for (auto c : {key_store_choice::software, key_store_choice::tpm, key_store_choice::automatic})
    if (text == to_string(c)) {
      out = c;
      return true;
    }
  return false;
}

void add_client_telemetry(io::http_headers& headers) {
  headers.set("x-client-SKU", client_sku);
  headers.set("x-client-Ver", version());
  headers.set("x-client-OS", platform::os_description());
}

module_config module_config::from_environment() {
  module_config cfg;
  if (const char* host = std::getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST"); host && *host) {
    cfg.imds_base_url = host;
    while (!cfg.imds_base_url.empty() && cfg.imds_base_url.back() == '/')
      cfg.imds_base_url.pop_back();
  }
  if (const char* off = std::getenv("MSIV2_DISABLE_V2"); off != nullptr)
    cfg.v2_enabled = !(std::strcmp(off, "1") == 0 || std::strcmp(off, "true") == 0);
  if (const char* att = std::getenv("MSIV2_ATTEST"); att != nullptr)
    cfg.attest = std::strcmp(att, "1") == 0 || std::strcmp(att, "true") == 0;
  cfg.eager_key = true;
  if (const char* eager = std::getenv("MSIV2_EAGER_KEY"); eager != nullptr)
    cfg.eager_key = !(std::strcmp(eager, "0") == 0 || std::strcmp(eager, "false") == 0);
  cfg.key_store = key_store_choice::automatic;
  if (const char* ks = std::getenv("MSIV2_KEY_STORE"); ks != nullptr && *ks != '\0') {
    if (!parse_key_store_choice(ks, cfg.key_store))
      cfg.key_store_error =
        std::string("MSIV2_KEY_STORE must be auto, tpm or software, got '") + ks + "'";
  }
  cfg.tpm_tcti = platform::tpm_tcti_from_environment();
  if (auto dir = platform::cache_dir_from_environment(); !dir)
    cfg.cache_dir_error = dir.error();
  else if (dir->has_value())
    cfg.cache_dir = **dir;
  return cfg;
}

binding_strength module_binding_strength(const key_store* keys,
                                         const attestation_provider* attestation) {
  if (keys == nullptr)
    return binding_strength::bearer;
  const binding_strength have = keys->strength();
  if (have == binding_strength::hardware_key && attestation != nullptr
      && attestation->attests_hardware_keys())
    return binding_strength::attested_hardware_key;
  return have;
}

void stats_registry::add(const std::string& key, std::uint64_t n) {
  std::lock_guard<std::mutex> guard(mtx_);
  data_.counters[key] += n;
}

void stats_registry::set_gauge(const std::string& key, double value) {
  std::lock_guard<std::mutex> guard(mtx_);
  data_.gauges[key] = value;
}

void stats_registry::erase_gauge(const std::string& key) {
  std::lock_guard<std::mutex> guard(mtx_);
  data_.gauges.erase(key);
}

stats_snapshot stats_registry::snapshot() const {
  std::lock_guard<std::mutex> guard(mtx_);
  return data_;
}

} // namespace msiv2
