#include "platform/tpm_attest.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include <tss2/tss2_mu.h>

#include "platform/tpm_key.hpp"
#include "platform/tpm_provider.hpp"

namespace msiv2::platform {
namespace {

// NV reads in pieces every TPM serves (TPM2_PT_NV_BUFFER_MAX is at least this on PC TPMs).
constexpr std::uint16_t nv_chunk = 512;

const std::uint8_t* as_bytes(std::string_view s) {
  return reinterpret_cast<const std::uint8_t*>(s.data());
}

std::string as_string(const std::uint8_t* p, std::size_t n) {
  return std::string(reinterpret_cast<const char*>(p), n);
}

// The TCG EK Credential Profile's RSA-2048 EK template (template L-1): the TPM derives the
// same key from the same endorsement seed, which is the key the EK certificate certifies.
TPM2B_PUBLIC ek_template() {
  static const std::uint8_t policy_secret_endorsement[32] = {
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};
  TPM2B_PUBLIC t{};
  auto& p = t.publicArea;
  p.type = TPM2_ALG_RSA;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                       TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  p.authPolicy.size = sizeof policy_secret_endorsement;
  std::memcpy(p.authPolicy.buffer, policy_secret_endorsement, sizeof policy_secret_endorsement);
  auto& rsa = p.parameters.rsaDetail;
  rsa.symmetric.algorithm = TPM2_ALG_AES;
  rsa.symmetric.keyBits.aes = 128;
  rsa.symmetric.mode.aes = TPM2_ALG_CFB;
  rsa.scheme.scheme = TPM2_ALG_NULL;
  rsa.keyBits = 2048;
  rsa.exponent = 0;
  p.unique.rsa.size = 256; // zeros
  return t;
}

// An attestation key: restricted RSASSA-SHA-256 signing key that cannot leave the TPM.
TPM2B_PUBLIC ak_template() {
  TPM2B_PUBLIC t{};
  auto& p = t.publicArea;
  p.type = TPM2_ALG_RSA;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                       TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
  auto& rsa = p.parameters.rsaDetail;
  rsa.symmetric.algorithm = TPM2_ALG_NULL;
  rsa.scheme.scheme = TPM2_ALG_RSASSA;
  rsa.scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
  rsa.keyBits = 2048;
  rsa.exponent = 0;
  return t;
}

} // namespace

result<tpm_binding> tpm_binding_of(EVP_PKEY* key) {
  if (key == nullptr)
    return fail("the binding key handle is empty");
  auto ref = tpm_pkey_reference(key);
  if (!ref)
    return fail("the binding key is not a TPM key (" + ref.error() +
                "): TPM attestation proves keys held in a TPM");
  tpm_binding out;
  out.public_area = ref->blob.public_area;
  out.load = [blob = ref->blob](tpm_connection& tpm) -> result<tpm_object> {
    auto loaded = load_tpm_key(tpm, blob);
    if (!loaded)
      return loaded.fail();
    loaded->srk = tpm_object(); // flushed: the binding key stays loaded without its parent
    return std::move(loaded->key);
  };
  return out;
}

result<ESYS_TR> tpm_endorsement_key(tpm_connection& tpm, tpm_object& made) {
  ESYS_TR persistent = ESYS_TR_NONE;
  if (Esys_TR_FromTPMPublic(tpm.esys(), tpm_ek_handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                            &persistent) == TSS2_RC_SUCCESS) {
    TPM2B_PUBLIC* pub = nullptr;
    const TSS2_RC rc = Esys_ReadPublic(tpm.esys(), persistent, ESYS_TR_NONE, ESYS_TR_NONE,
                                       ESYS_TR_NONE, &pub, nullptr, nullptr);
    esys_ptr<TPM2B_PUBLIC> owned{pub};
    if (rc == TSS2_RC_SUCCESS && pub->publicArea.type == TPM2_ALG_RSA)
      return persistent;
    Esys_TR_Close(tpm.esys(), &persistent);
  }
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC in_public = ek_template();
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  ESYS_TR ek = ESYS_TR_NONE;
  if (auto rc = Esys_CreatePrimary(tpm.esys(), ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD,
                                   ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &in_public, &outside,
                                   &pcrs, &ek, nullptr, nullptr, nullptr, nullptr);
      rc != TSS2_RC_SUCCESS)
    return tpm.failed(rc, "Esys_CreatePrimary(endorsement key)");
  made = tpm_object(tpm, ek);
  return ek;
}

result<tpm_object> tpm_endorsement_session(tpm_connection& tpm) {
  TPMT_SYM_DEF symmetric{};
  symmetric.algorithm = TPM2_ALG_NULL;
  ESYS_TR session = ESYS_TR_NONE;
  if (auto rc = Esys_StartAuthSession(tpm.esys(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      ESYS_TR_NONE, ESYS_TR_NONE, nullptr, TPM2_SE_POLICY,
                                      &symmetric, TPM2_ALG_SHA256, &session);
      rc != TSS2_RC_SUCCESS)
    return tpm.failed(rc, "Esys_StartAuthSession(policy)");
  tpm_object owned(tpm, session);
  if (auto rc = Esys_PolicySecret(tpm.esys(), ESYS_TR_RH_ENDORSEMENT, session, ESYS_TR_PASSWORD,
                                  ESYS_TR_NONE, ESYS_TR_NONE, nullptr, nullptr, nullptr, 0,
                                  nullptr, nullptr);
      rc != TSS2_RC_SUCCESS) {
    auto f = tpm.failed(rc, "Esys_PolicySecret(endorsement)");
    f.message += " (the endorsement hierarchy must have an empty authorization value)";
    return f;
  }
  return owned;
}

namespace {

// The DER certificate at the front of `nv` (TPMs may pad the index after it).
result<std::string> trim_der(std::string nv) {
  if (nv.size() < 4 || static_cast<unsigned char>(nv[0]) != 0x30)
    return fail("the EK certificate NV index does not hold a DER certificate");
  std::size_t len = static_cast<unsigned char>(nv[1]);
  std::size_t header = 2;
  if (len & 0x80) {
    const std::size_t n = len & 0x7f;
    if (n == 0 || n > 3 || nv.size() < 2 + n)
      return fail("the EK certificate NV index holds a malformed DER length");
    len = 0;
    for (std::size_t i = 0; i < n; ++i)
      len = (len << 8) | static_cast<unsigned char>(nv[2 + i]);
    header += n;
  }
  if (header + len > nv.size())
    return fail("the EK certificate in NV is truncated");
  nv.resize(header + len);
  return nv;
}

result<std::string> read_ek_certificate(tpm_connection& tpm) {
  ESYS_TR nv = ESYS_TR_NONE;
  if (auto rc = Esys_TR_FromTPMPublic(tpm.esys(), tpm_ek_certificate_index, ESYS_TR_NONE,
                                      ESYS_TR_NONE, ESYS_TR_NONE, &nv);
      rc != TSS2_RC_SUCCESS) {
    auto f = tpm.failed(rc, "Esys_TR_FromTPMPublic(EK certificate NV index 0x01c00002)");
    f.message += " (this TPM has no RSA EK certificate: attestation needs one)";
    return f;
  }
  TPM2B_NV_PUBLIC* nv_public = nullptr;
  if (auto rc = Esys_NV_ReadPublic(tpm.esys(), nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   &nv_public, nullptr);
      rc != TSS2_RC_SUCCESS)
    return tpm.failed(rc, "Esys_NV_ReadPublic(EK certificate)");
  esys_ptr<TPM2B_NV_PUBLIC> owned_public{nv_public};
  const std::uint16_t size = nv_public->nvPublic.dataSize;
  // The index is read with its own (empty) authorization when it allows that, else the owner's.
  const ESYS_TR auth = (nv_public->nvPublic.attributes & TPMA_NV_AUTHREAD) != 0 ? nv
                                                                                : ESYS_TR_RH_OWNER;
  std::string out;
  while (out.size() < size) {
    const auto n = static_cast<std::uint16_t>(std::min<std::size_t>(nv_chunk, size - out.size()));
    TPM2B_MAX_NV_BUFFER* data = nullptr;
    if (auto rc = Esys_NV_Read(tpm.esys(), auth, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                               n, static_cast<std::uint16_t>(out.size()), &data);
        rc != TSS2_RC_SUCCESS)
      return tpm.failed(rc, "Esys_NV_Read(EK certificate)");
    esys_ptr<TPM2B_MAX_NV_BUFFER> chunk{data};
    if (data->size == 0)
      return fail("the TPM returned an empty read of the EK certificate");
    out += as_string(data->buffer, data->size);
  }
  return trim_der(std::move(out));
}

template <class T, TSS2_RC (*Marshal)(const T*, std::uint8_t*, std::size_t, std::size_t*)>
std::string marshal(const T& value) {
  std::vector<std::uint8_t> buf(sizeof(T) + 8);
  std::size_t off = 0;
  if (Marshal(&value, buf.data(), buf.size(), &off) != TSS2_RC_SUCCESS)
    return {};
  return as_string(buf.data(), off);
}

template <class T, TSS2_RC (*Unmarshal)(const std::uint8_t*, std::size_t, std::size_t*, T*)>
result<T> unmarshal(std::string_view bytes, const char* what) {
  T out{};
  std::size_t off = 0;
  if (Unmarshal(as_bytes(bytes), bytes.size(), &off, &out) != TSS2_RC_SUCCESS ||
      off != bytes.size())
    return fail(std::string("the attestation service's ") + what + " is malformed");
  return out;
}

} // namespace

result<tpm_attestation_material> begin_tpm_attestation(const tpm_config& cfg) {
  return run_tpm<tpm_attestation_material>(
    cfg, "prepare TPM attestation (EK certificate, new AK)",
    [&](tpm_connection& tpm) -> result<tpm_attestation_material> {
      tpm_attestation_material m;
      auto cert = read_ek_certificate(tpm);
      if (!cert)
        return cert.fail();
      m.ek_certificate = std::move(*cert);

      tpm_object made_ek;
      auto ek = tpm_endorsement_key(tpm, made_ek);
      if (!ek)
        return ek.fail();
      auto session = tpm_endorsement_session(tpm);
      if (!session)
        return session.fail();
      TPM2B_SENSITIVE_CREATE sensitive{};
      TPM2B_PUBLIC in_public = ak_template();
      TPM2B_DATA outside{};
      TPML_PCR_SELECTION pcrs{};
      TPM2B_PRIVATE* priv = nullptr;
      TPM2B_PUBLIC* pub = nullptr;
      if (auto rc = Esys_Create(tpm.esys(), *ek, session->get(), ESYS_TR_NONE, ESYS_TR_NONE,
                                &sensitive, &in_public, &outside, &pcrs, &priv, &pub, nullptr,
                                nullptr, nullptr);
          rc != TSS2_RC_SUCCESS)
        return tpm.failed(rc, "Esys_Create(attestation key under the EK)");
      esys_ptr<TPM2B_PRIVATE> owned_priv{priv};
      esys_ptr<TPM2B_PUBLIC> owned_pub{pub};
      m.ak.public_area = marshal<TPM2B_PUBLIC, Tss2_MU_TPM2B_PUBLIC_Marshal>(*pub);
      m.ak.private_area = marshal<TPM2B_PRIVATE, Tss2_MU_TPM2B_PRIVATE_Marshal>(*priv);
      if (m.ak.public_area.empty() || m.ak.private_area.empty())
        return fail("the new attestation key does not marshal");
      return m;
    });
}

result<tpm_attestation_answer> answer_tpm_challenge(const tpm_config& cfg,
                                                    const tpm_attestation_material& material,
                                                    const tpm_key_loader& load_binding,
                                                    std::string_view credential_blob,
                                                    std::string_view encrypted_secret,
                                                    std::string_view nonce) {
  auto id_object =
    unmarshal<TPM2B_ID_OBJECT, Tss2_MU_TPM2B_ID_OBJECT_Unmarshal>(credential_blob,
                                                                   "credential_blob");
  if (!id_object)
    return id_object.fail();
  auto secret = unmarshal<TPM2B_ENCRYPTED_SECRET, Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal>(
    encrypted_secret, "encrypted_secret");
  if (!secret)
    return secret.fail();
  auto ak_public =
    unmarshal<TPM2B_PUBLIC, Tss2_MU_TPM2B_PUBLIC_Unmarshal>(material.ak.public_area, "AK public");
  auto ak_private = unmarshal<TPM2B_PRIVATE, Tss2_MU_TPM2B_PRIVATE_Unmarshal>(
    material.ak.private_area, "AK private");
  if (!ak_public || !ak_private)
    return fail("the attestation key blob is malformed");
  TPM2B_DATA qualifying{};
  if (nonce.size() > sizeof qualifying.buffer)
    return fail("the attestation service's nonce is longer than the TPM accepts (" +
                std::to_string(sizeof qualifying.buffer) + " bytes)");
  qualifying.size = static_cast<UINT16>(nonce.size());
  std::memcpy(qualifying.buffer, nonce.data(), nonce.size());

  return run_tpm<tpm_attestation_answer>(
    cfg, "answer the TPM attestation challenge (ActivateCredential, Certify)",
    [&](tpm_connection& tpm) -> result<tpm_attestation_answer> {
      tpm_attestation_answer out;
      // At most three transient objects at a time (swtpm's minimum): EK, AK; then AK, binding.
      tpm_object made_ek;
      auto ek = tpm_endorsement_key(tpm, made_ek);
      if (!ek)
        return ek.fail();
      auto load_session = tpm_endorsement_session(tpm);
      if (!load_session)
        return load_session.fail();
      ESYS_TR ak_handle = ESYS_TR_NONE;
      if (auto rc = Esys_Load(tpm.esys(), *ek, load_session->get(), ESYS_TR_NONE, ESYS_TR_NONE,
                              &*ak_private, &*ak_public, &ak_handle);
          rc != TSS2_RC_SUCCESS)
        return tpm.failed(rc, "Esys_Load(attestation key)");
      tpm_object ak(tpm, ak_handle);
      *load_session = tpm_object();

      auto activate_session = tpm_endorsement_session(tpm);
      if (!activate_session)
        return activate_session.fail();
      TPM2B_DIGEST* credential = nullptr;
      if (auto rc = Esys_ActivateCredential(tpm.esys(), ak.get(), *ek, ESYS_TR_PASSWORD,
                                            activate_session->get(), ESYS_TR_NONE, &*id_object,
                                            &*secret, &credential);
          rc != TSS2_RC_SUCCESS) {
        auto f = tpm.failed(rc, "Esys_ActivateCredential");
        f.message += " (the challenge was not made for this TPM's EK and this AK)";
        return f;
      }
      esys_ptr<TPM2B_DIGEST> owned_credential{credential};
      out.secret = as_string(credential->buffer, credential->size);
      *activate_session = tpm_object();
      made_ek = tpm_object();

      auto key = load_binding(tpm);
      if (!key)
        return key.fail();
      TPMT_SIG_SCHEME scheme{};
      scheme.scheme = TPM2_ALG_NULL; // the AK's own: RSASSA SHA-256
      TPM2B_ATTEST* attest = nullptr;
      TPMT_SIGNATURE* signature = nullptr;
      if (auto rc = Esys_Certify(tpm.esys(), key->get(), ak.get(), ESYS_TR_PASSWORD,
                                 ESYS_TR_PASSWORD, ESYS_TR_NONE, &qualifying, &scheme, &attest,
                                 &signature);
          rc != TSS2_RC_SUCCESS)
        return tpm.failed(rc, "Esys_Certify(binding key by the attestation key)");
      esys_ptr<TPM2B_ATTEST> owned_attest{attest};
      esys_ptr<TPMT_SIGNATURE> owned_signature{signature};
      out.certify_info = as_string(attest->attestationData, attest->size);
      out.signature = marshal<TPMT_SIGNATURE, Tss2_MU_TPMT_SIGNATURE_Marshal>(*signature);
      if (out.signature.empty())
        return fail("the certification's signature does not marshal");
      return out;
    });
}

} // namespace msiv2::platform
