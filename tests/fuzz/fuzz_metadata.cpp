// getplatformmetadata's answer (read_metadata_answer, parse_platform_metadata) and the readers
// of upstream error bodies (correlation_of, upstream_says). The first line is the Server
// header of the answer.

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
  fuzz::require(said.size() <= std::string("HTTP 400: ").size() + 300,
                "upstream text is cut at 300 bytes");
  (void)correlation_of(body, "ours");
  return 0;
}
