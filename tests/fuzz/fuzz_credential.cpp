// issuecredential's answer (read_credential_answer) against the fixed key and the
// simulator's default identity, at the seeds' time.

#include <cstddef>
#include <cstdint>

#include "actors/imds_parse.hpp"
#include "io/endpoint_trust.hpp"
#include "platform/x509.hpp"
#include "tests/fuzz/fuzz_common.hpp"
#include "tools/sim/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  static const credential_expectation want = [] {
    sim::config cfg;
    credential_expectation w;
    w.identity = managed_identity::system();
    w.metadata.client_id = cfg.system_identity.client_id;
    w.metadata.tenant_id = cfg.tenant_id;
    w.key = fuzz::fixed_key();
    w.token_hosts = io::loopback_hosts();
    return w;
  }();
  bool mismatch = false;
  auto c = read_credential_answer(fuzz::as_text(data, size), want, fuzz::seed_time_s + 60,
                                  &mismatch);
  if (c) {
    fuzz::require(!mismatch, "an accepted certificate certifies our key");
    fuzz::require(c->mtls_endpoint.rfind("https://", 0) == 0, "the endpoint is https");
    fuzz::require(c->mtls_endpoint.back() != '/', "the endpoint has no trailing '/'");
    fuzz::require(static_cast<bool>(io::check_endpoint(c->mtls_endpoint, want.token_hosts, "url")),
                  "the endpoint passes the allow-list again");
    fuzz::require(c->x5t_s256 == platform::x5t_s256(c->certificate_der),
                  "x5t#S256 is the certificate's");
    fuzz::require(c->not_before_ms <= c->not_after_ms, "the certificate's window is ordered");
  }
  return 0;
}
