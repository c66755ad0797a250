#include "platform/tpm_key.hpp"

#include <cstring>

#include <tss2/tss2_mu.h>

#include "platform/encoding.hpp"

namespace msiv2::platform {

namespace {

constexpr std::string_view blob_magic = "msiv2-tpm-key-v1\n";

// The TCG storage root key template (TCG TPM v2.0 Provisioning Guidance, ECC P-256 SRK): the
// TPM derives the same key from the same owner seed every time.
TPM2B_PUBLIC srk_template() {
  TPM2B_PUBLIC t{};
  auto& p = t.publicArea;
  p.type = TPM2_ALG_ECC;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_FIXEDTPM
                       | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN
                       | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA;
  auto& ecc = p.parameters.eccDetail;
  ecc.symmetric.algorithm = TPM2_ALG_AES;
  ecc.symmetric.keyBits.aes = 128;
  ecc.symmetric.mode.aes = TPM2_ALG_CFB;
  ecc.scheme.scheme = TPM2_ALG_NULL;
  ecc.curveID = TPM2_ECC_NIST_P256;
  ecc.kdf.scheme = TPM2_ALG_NULL;
  return t;
}

TPM2B_PUBLIC binding_key_template() {
  TPM2B_PUBLIC t{};
  auto& p = t.publicArea;
  p.type = TPM2_ALG_RSA;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = tpm_binding_key_attributes();
  auto& rsa = p.parameters.rsaDetail;
  rsa.symmetric.algorithm = TPM2_ALG_NULL;
  rsa.scheme.scheme = TPM2_ALG_NULL; // the signer picks RSASSA or RSAPSS per signature
  rsa.keyBits = 2048;
  rsa.exponent = 0; // 65537
  return t;
}

// Creates the SRK for this operation (flushed by the returned tpm_object).
result<tpm_object> create_srk(tpm_connection& tpm) {
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC in_public = srk_template();
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  ESYS_TR srk = ESYS_TR_NONE;
  if (auto rc = Esys_CreatePrimary(tpm.esys(), ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, &sensitive, &in_public, &outside, &pcrs, &srk,
                                   nullptr, nullptr, nullptr, nullptr);
      rc != TSS2_RC_SUCCESS) {
    auto f = tpm.failed(rc, "Esys_CreatePrimary(storage root key)");
    if ((rc & 0xfffu) == TPM2_RC_BAD_AUTH || (rc & 0xbfu) == TPM2_RC_AUTH_FAIL)
      f.message += " (the TPM's owner hierarchy has an authorization value: the TPM key store "
                   "needs it empty)";
    return f;
  }
  return tpm_object(tpm, srk);
}

result<void> unmarshal(const tpm_key_blob& blob, TPM2B_PUBLIC& pub, TPM2B_PRIVATE& priv) {
  size_t off = 0;
  auto rc = Tss2_MU_TPM2B_PUBLIC_Unmarshal(
    reinterpret_cast<const uint8_t*>(blob.public_area.data()), blob.public_area.size(), &off, &pub);
  if (rc != TSS2_RC_SUCCESS || off != blob.public_area.size())
    return fail("the TPM key blob's public area is malformed (" + describe_tss_rc(rc) + ")");
  off = 0;
  rc = Tss2_MU_TPM2B_PRIVATE_Unmarshal(
    reinterpret_cast<const uint8_t*>(blob.private_area.data()), blob.private_area.size(), &off,
    &priv);
  if (rc != TSS2_RC_SUCCESS || off != blob.private_area.size())
    return fail("the TPM key blob's private area is malformed (" + describe_tss_rc(rc) + ")");
  return ok();
}

} // namespace

result<tpm_loaded_key> load_tpm_key(tpm_connection& tpm, const tpm_key_blob& blob,
                                    bool* refused) {
  TPM2B_PUBLIC pub{};
  TPM2B_PRIVATE priv{};
  if (auto u = unmarshal(blob, pub, priv); !u)
    return u.fail();
  auto srk = create_srk(tpm);
  if (!srk)
    return srk.fail();
  ESYS_TR key = ESYS_TR_NONE;
  if (auto rc = Esys_Load(tpm.esys(), srk->get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                          &priv, &pub, &key);
      rc != TSS2_RC_SUCCESS) {
    // An error (not a warning such as TPM_RC_OBJECT_MEMORY) from the TPM itself: it will
    // never load this blob.
    bool warning = (rc & 0x80u) == 0 && (rc & 0x800u) != 0;
    bool tpm_refused = classify_tss_rc(rc) == tpm_rc_class::fatal
                       && (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && !warning;
    if (refused != nullptr)
      *refused = tpm_refused;
    auto f = tpm.failed(rc, "Esys_Load(binding key)");
    if (tpm_refused)
      f.message += " (the key was not made by this TPM under its current owner seed: the TPM "
                   "was cleared or replaced, or the blob is damaged)";
    return f;
  }
  tpm_loaded_key out{std::move(*srk), tpm_object(tpm, key)};
  return out;
}

namespace {

std::string marshal_public(const TPM2B_PUBLIC& pub) {
  uint8_t buf[sizeof(TPM2B_PUBLIC)];
  size_t off = 0;
  if (Tss2_MU_TPM2B_PUBLIC_Marshal(&pub, buf, sizeof buf, &off) != TSS2_RC_SUCCESS)
    return {};
  return std::string(reinterpret_cast<char*>(buf), off);
}

std::string marshal_private(const TPM2B_PRIVATE& priv) {
  uint8_t buf[sizeof(TPM2B_PRIVATE)];
  size_t off = 0;
  if (Tss2_MU_TPM2B_PRIVATE_Marshal(&priv, buf, sizeof buf, &off) != TSS2_RC_SUCCESS)
    return {};
  return std::string(reinterpret_cast<char*>(buf), off);
}

} // namespace

std::uint32_t tpm_binding_key_attributes() noexcept {
  return TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT
         | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA;
}

result<tpm_key_blob> create_tpm_binding_key(const tpm_config& cfg) {
  return run_tpm<tpm_key_blob>(cfg, "create the binding key in the TPM",
                               [](tpm_connection& tpm) -> result<tpm_key_blob> {
    auto srk = create_srk(tpm);
    if (!srk)
      return srk.fail();
    TPM2B_SENSITIVE_CREATE sensitive{};
    TPM2B_PUBLIC in_public = binding_key_template();
    TPM2B_DATA outside{};
    TPML_PCR_SELECTION pcrs{};
    TPM2B_PRIVATE* priv_raw = nullptr;
    TPM2B_PUBLIC* pub_raw = nullptr;
    if (auto rc = Esys_Create(tpm.esys(), srk->get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                              &sensitive, &in_public, &outside, &pcrs, &priv_raw, &pub_raw,
                              nullptr, nullptr, nullptr);
        rc != TSS2_RC_SUCCESS)
      return tpm.failed(rc, "Esys_Create(RSA-2048 binding key)");
    esys_ptr<TPM2B_PRIVATE> priv(priv_raw);
    esys_ptr<TPM2B_PUBLIC> pub(pub_raw);
    tpm_key_blob blob{marshal_public(*pub), marshal_private(*priv)};
    if (blob.public_area.empty() || blob.private_area.empty())
      return fail("cannot marshal the new TPM key's areas");
    return blob;
  });
}

result<tpm_rsa_public> tpm_key_public(const tpm_key_blob& blob) {
  TPM2B_PUBLIC pub{};
  TPM2B_PRIVATE priv{};
  if (auto u = unmarshal(blob, pub, priv); !u)
    return u.fail();
  const auto& p = pub.publicArea;
  if (p.type != TPM2_ALG_RSA || p.parameters.rsaDetail.keyBits != 2048)
    return fail("the TPM key blob holds no RSA-2048 key");
  if (p.nameAlg != TPM2_ALG_SHA256)
    return fail("the TPM key blob's name algorithm is not SHA-256");
  if (p.objectAttributes != tpm_binding_key_attributes())
    return fail("the TPM key blob's attributes are not those of a binding key (0x"
                + hex_lower(std::string{static_cast<char>(p.objectAttributes >> 24),
                                        static_cast<char>(p.objectAttributes >> 16),
                                        static_cast<char>(p.objectAttributes >> 8),
                                        static_cast<char>(p.objectAttributes)})
                + ")");
  tpm_rsa_public out;
  out.modulus.assign(reinterpret_cast<const char*>(p.unique.rsa.buffer), p.unique.rsa.size);
  if (out.modulus.size() != 256)
    return fail("the TPM key blob's modulus is not 2048 bits");
  out.exponent = p.parameters.rsaDetail.exponent == 0 ? 65537u : p.parameters.rsaDetail.exponent;
  out.attributes = p.objectAttributes;
  // Name = nameAlg || H(marshalled TPMT_PUBLIC).
  uint8_t buf[sizeof(TPMT_PUBLIC)];
  size_t off = 0;
  if (Tss2_MU_TPMT_PUBLIC_Marshal(&p, buf, sizeof buf, &off) != TSS2_RC_SUCCESS)
    return fail("cannot marshal the TPM key's public area");
  out.name = std::string("\x00\x0b", 2) + sha256(std::string_view(reinterpret_cast<char*>(buf), off));
  return out;
}

result<void> check_tpm_key_loads(const tpm_config& cfg, const tpm_key_blob& blob,
                                 bool* refused_by_tpm) {
  bool refused = false;
  TPM2B_PUBLIC p{};
  TPM2B_PRIVATE q{};
  if (auto u = unmarshal(blob, p, q); !u) {
    if (refused_by_tpm != nullptr)
      *refused_by_tpm = true;
    return u.fail();
  }
  auto r = run_tpm_void(cfg, "load the binding key into the TPM",
                      [&](tpm_connection& tpm) -> result<void> {
                        refused = false;
                        auto k = load_tpm_key(tpm, blob, &refused);
                        if (!k)
                          return k.fail();
                        return ok();
                      });
  if (refused_by_tpm != nullptr)
    *refused_by_tpm = !r.ok() && refused;
  return r;
}

result<std::string> tpm_sign_digest(const tpm_config& cfg, const tpm_key_blob& blob,
                                    tpm_sig_scheme scheme, std::string_view digest,
                                    bool* refused_by_tpm) {
  TPMI_ALG_HASH hash = TPM2_ALG_NULL;
  switch (digest.size()) {
    case 32: hash = TPM2_ALG_SHA256; break;
    case 48: hash = TPM2_ALG_SHA384; break;
    case 64: hash = TPM2_ALG_SHA512; break;
    default:
      return fail("the TPM key signs SHA-256, SHA-384 or SHA-512 digests, not "
                  + std::to_string(digest.size()) + "-byte ones");
  }
  bool refused = false;
  auto signed_digest = run_tpm<std::string>(cfg, "sign with the TPM binding key",
                              [&](tpm_connection& tpm) -> result<std::string> {
    refused = false;
    auto k = load_tpm_key(tpm, blob, &refused);
    if (!k)
      return k.fail();
    TPM2B_DIGEST d{};
    d.size = static_cast<UINT16>(digest.size());
    std::memcpy(d.buffer, digest.data(), digest.size());
    TPMT_SIG_SCHEME s{};
    s.scheme = scheme == tpm_sig_scheme::rsapss ? TPM2_ALG_RSAPSS : TPM2_ALG_RSASSA;
    s.details.any.hashAlg = hash;
    TPMT_TK_HASHCHECK ticket{};
    ticket.tag = TPM2_ST_HASHCHECK;
    ticket.hierarchy = TPM2_RH_NULL;
    TPMT_SIGNATURE* sig_raw = nullptr;
    if (auto rc = Esys_Sign(tpm.esys(), k->key.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                            ESYS_TR_NONE, &d, &s, &ticket, &sig_raw);
        rc != TSS2_RC_SUCCESS)
      return tpm.failed(rc, "Esys_Sign");
    esys_ptr<TPMT_SIGNATURE> sig(sig_raw);
    const auto& rsa = sig->sigAlg == TPM2_ALG_RSAPSS ? sig->signature.rsapss
                                                     : sig->signature.rsassa;
    return std::string(reinterpret_cast<const char*>(rsa.sig.buffer), rsa.sig.size);
  });
  if (refused_by_tpm != nullptr)
    *refused_by_tpm = !signed_digest.ok() && refused;
  return signed_digest;
}

std::string encode_tpm_key_blob(const tpm_key_blob& blob) {
  return std::string(blob_magic) + base64_encode(blob.public_area) + "\n"
         + base64_encode(blob.private_area) + "\n";
}

result<tpm_key_blob> decode_tpm_key_blob(std::string_view text) {
  if (text.substr(0, blob_magic.size()) != blob_magic)
    return fail("not a TPM key blob (no 'msiv2-tpm-key-v1' header)");
  text.remove_prefix(blob_magic.size());
  auto nl = text.find('\n');
  if (nl == std::string_view::npos)
    return fail("TPM key blob: the private area line is missing");
  auto pub = base64_decode(text.substr(0, nl));
  if (!pub)
    return fail("TPM key blob: public area: " + pub.error());
  text.remove_prefix(nl + 1);
  nl = text.find('\n');
  if (nl == std::string_view::npos || nl + 1 != text.size())
    return fail("TPM key blob: the private area line is missing or followed by more");
  auto priv = base64_decode(text.substr(0, nl));
  if (!priv)
    return fail("TPM key blob: private area: " + priv.error());
  tpm_key_blob blob{std::move(*pub), std::move(*priv)};
  TPM2B_PUBLIC p{};
  TPM2B_PRIVATE q{};
  if (auto u = unmarshal(blob, p, q); !u)
    return u.fail();
  return blob;
}

} // namespace msiv2::platform
