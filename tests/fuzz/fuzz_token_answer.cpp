// The token answers (read_token_answer: mTLS token endpoint and IMDS v1) and OAuth error
// bodies (read_oauth_error, certificate_refused). The first line is "<mode><x5t>": mode 'p'
// an mtls_pop answer bound to <x5t>, 'b' a bearer answer of the token endpoint, anything
// else an IMDS v1 answer.

#include <cstddef>
#include <cstdint>
#include <string>

#include "actors/token_parse.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  auto [line, body] = fuzz::first_line(fuzz::as_text(data, size));
  const char mode = line.empty() ? 'v' : line.front();
  token_answer_expectation want;
  want.mtls = mode == 'p' || mode == 'b';
  want.want = mode == 'p' ? token_type::mtls_pop : token_type::bearer;
  if (!line.empty())
    want.x5t_s256 = std::string(line.substr(1));
  const std::int64_t now_ms = fuzz::seed_time_s * 1000;
  auto answer = read_token_answer(body, want, now_ms);
  if (answer) {
    fuzz::require(answer->expires_at_ms > now_ms, "an accepted token expires in the future");
    fuzz::require(!answer->refresh_in_ms || *answer->refresh_in_ms > 0,
                  "refresh_in is positive");
    fuzz::require(!answer->access_token.empty(), "an accepted token is not empty");
  }
  auto e = read_oauth_error(body);
  (void)certificate_refused(e);
  return 0;
}
