#include "platform/binding.hpp"

namespace msiv2 {

binding_key::binding_key(platform::pkey_ptr key, std::string key_id)
  : key_(std::move(key)), key_id_(std::move(key_id)) {
  // nop
}

} // namespace msiv2
