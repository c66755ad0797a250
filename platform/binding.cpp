#include "platform/binding.hpp"

#include "platform/tpm_provider.hpp"

namespace msiv2 {

binding_key::binding_key(platform::pkey_ptr key, std::string key_id)
  : key_(std::move(key)), key_id_(std::move(key_id)) {
  // nop
}

bool binding_key::unusable() const noexcept {
  return platform::tpm_pkey_refused(key_.get());
}

} // namespace msiv2
