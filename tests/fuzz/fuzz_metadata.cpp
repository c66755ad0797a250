// getplatformmetadata's answer (read_metadata_answer, parse_platform_metadata) and the readers
// of upstream error bodies (correlation_of, upstream_says). The first line is the Server
// header of the answer.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "actors/imds_parse.hpp"
#include "platform/encoding.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  auto [server, body] = fuzz::first_line(fuzz::as_text(data, size));
  auto r = io::http_response::with_status(200, std::string(body));
  if (!server.empty())
    r.headers.add("Server", std::string(server));
  auto answer = read_metadata_answer(r);
  auto meta = parse_platform_metadata(body);
  if (answer) {
    fuzz::require(contains_ignoring_case(server, "imds"), "an answer is read only from IMDS");
    fuzz::require(meta.ok(), "the answer's body reads alone too");
  }
  if (meta) {
    fuzz::require(platform::is_guid(meta->client_id) && platform::is_guid(meta->tenant_id),
                  "clientId and tenantId are GUIDs");
    fuzz::require(!meta->cuid_json.empty(), "cuId has a CSR form");
  }
  auto said = upstream_says(io::http_response::with_status(400, std::string(body)));
  // sanitize_upstream: at most 300 characters, plus the last escape that crossed the bound
  // (4 characters) and "...(N bytes)" naming the original length when it cut (review L2).
  fuzz::require(said.size() <= std::string("HTTP 400: ").size() + 300 + 3
                                 + std::string("...(18446744073709551615 bytes)").size(),
                "upstream text is cut at 300 characters (plus the cut's note)");
  fuzz::require(std::none_of(said.begin(), said.end(),
                             [](char c) { return static_cast<unsigned char>(c) < 0x20; }),
                "upstream text has its control bytes escaped");
  (void)correlation_of(body, "ours");
  return 0;
}
