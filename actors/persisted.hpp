#pragma once

// The file formats of the artifacts shared by this user's processes (architecture.md, "Across
// processes on one machine"): the binding certificate with its issuecredential metadata, the
// attestation JWT, and the per-boot software binding key. Each is versioned; decoding checks
// the schema, the version, which artifact the file is for and that it belongs to the current
// key, and returns the artifact or a reason a person can read (never a secret). Access tokens
// are never written anywhere.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "messages/protocol.hpp"
#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2::persisted {

/// Why a file was refused.
enum class refusal {
  malformed,   ///< not our JSON/PEM, a member missing or of the wrong type
  other_format,///< another schema or version
  other_artifact, ///< a file for another artifact id (a hash collision or a copied file)
  orphan,      ///< made for a key that is not the current one
  invalid,     ///< the certificate/JWT does not parse or validate
  expired,     ///< no longer usable
};

/// A decoded artifact, or why it was refused.
template <class T>
struct decoded {
  std::optional<T> value;
  refusal why = refusal::malformed;
  std::string reason; ///< names the file's problem; empty when value is set

  explicit operator bool() const noexcept { return value.has_value(); }
};

// -- certificate --------------------------------------------------------------------------------

/// The id of a certificate file: "<imds_base_url> <certificate_cache_key>".
std::string certificate_artifact_id(const std::string& imds_base_url, const std::string& cache_key);
/// Its file name for the binding key `key_id`: "cert-<32 hex of the id's SHA-256>-<the key
/// id's first 16 hex digits>.json". Named with the key (review M6): processes that hold
/// different keys (one went ahead alone, or has not reloaded a rotated key yet) never read,
/// overwrite or delete each other's certificate file; a replaced key's files are deleted by
/// the key store that replaced it (purge_orphan_artifacts).
std::string certificate_file_name(const std::string& artifact_id, const std::string& key_id);

/// The certificate file of `c` (everything but the key itself; `written_at_ms` is Unix ms).
std::string encode_certificate(const credential& c, const std::string& artifact_id,
                               std::int64_t written_at_ms);

/// The credential of a certificate file, bound to `current` (the key of this process): refused
/// when the file is of another schema/version or artifact, names another key (orphan), or its
/// certificate does not parse, does not certify `current`, or has expired at `now_s`, or its
/// mtls_authentication_endpoint fails io::check_endpoint against `token_hosts` (a file is
/// trusted no more than the IMDS answer it was made from).
decoded<credential> decode_certificate(std::string_view bytes, const std::string& artifact_id,
                                       const key_ref& current, std::int64_t now_s,
                                       const std::vector<std::string>& token_hosts);

// -- attestation --------------------------------------------------------------------------------

/// The id of an attestation file: "<endpoint> <key id>".
std::string attestation_artifact_id(const std::string& endpoint, const std::string& key_id);
/// Its file name (platform::artifact_file_name("attestation", id, ".json")).
std::string attestation_file_name(const std::string& endpoint, const std::string& key_id);

/// The attestation file of `t`.
std::string encode_attestation(const attestation_token& t, const std::string& endpoint,
                               const std::string& key_id, std::int64_t written_at_ms);

/// The attestation token of a file: iat/exp are read again from the JWT itself; refused when
/// it names another endpoint or key id, or when the JWT has expired at `now_ms`.
decoded<attestation_token> decode_attestation(std::string_view bytes, const std::string& endpoint,
                                              const std::string& key_id, std::int64_t now_ms);

/// The key id named by any certificate or attestation file (used to find orphans), or an
/// empty string when the file is not one of ours.
std::string key_id_of(std::string_view bytes);

// -- binding key --------------------------------------------------------------------------------

/// The file name of the per-boot software binding key.
inline constexpr const char* key_file_name = "binding-key.pem";
/// The lock name that serializes its creation and rotation.
inline constexpr const char* key_lock_name = "binding-key";

/// The header of a key file and its PEM (a secret: never log it).
struct key_file {
  std::string boot_id;
  std::string key_id;
  std::string pem; ///< from "-----BEGIN" on
};

/// Header lines (schema, boot id, key id) then the PKCS#8 PEM of `key`.
result<std::string> encode_key(EVP_PKEY* key, const std::string& boot_id, const std::string& key_id);
/// Splits a key file into its header and its PEM (does not parse the key).
decoded<key_file> decode_key_file(std::string_view bytes);

} // namespace msiv2::persisted
