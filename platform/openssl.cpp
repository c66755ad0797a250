#include "platform/openssl.hpp"

#include <openssl/err.h>

namespace msiv2::platform {

std::string drain_openssl_errors(std::string_view what) {
  std::string out(what);
  bool first = true;
  unsigned long code = 0;
  char buf[256];
  const char* data = nullptr;
  int flags = 0;
  while ((code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
    ERR_error_string_n(code, buf, sizeof(buf));
    out += first ? ": " : "; ";
    out += buf;
    // The detail a provider attached (ours says what the TPM answered).
    if ((flags & ERR_TXT_STRING) != 0 && data != nullptr && *data != '\0') {
      out += " (";
      out += data;
      out += ")";
    }
    first = false;
  }
  return out;
}

pkey_ptr share_key(EVP_PKEY* key) {
  if (key != nullptr)
    EVP_PKEY_up_ref(key);
  return pkey_ptr{key};
}

} // namespace msiv2::platform
