#include "tests/support/sim_soft_tpm.hpp"

#include <openssl/core_names.h>
#include <openssl/rsa.h>

#include <tss2/tss2_mu.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tests/support/test_keys.hpp"
#include "tools/sim/tpm_verifier.hpp"

namespace msiv2::test {
namespace {

using name_ptr = platform::x509_name_ptr;
using gens_ptr = std::unique_ptr<GENERAL_NAMES, platform::ossl_deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;
using cipher_ctx_ptr =
  std::unique_ptr<EVP_CIPHER_CTX, platform::ossl_deleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;

const unsigned char* as_bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

void check(bool ok, const char* what) {
  if (!ok)
    throw std::runtime_error(platform::drain_openssl_errors(what));
}

platform::pkey_ptr new_key() {
  auto key = platform::generate_rsa_key(2048);
  if (!key)
    throw std::runtime_error(key.error());
  return std::move(*key);
}

name_ptr cn_name(const char* cn) {
  name_ptr name{X509_NAME_new()};
  check(name && X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_ASC,
                                           reinterpret_cast<const unsigned char*>(cn), -1, -1,
                                           0) == 1,
        "CN");
  return name;
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  check(ext != nullptr && X509_add_ext(cert, ext, -1) == 1, "extension");
  X509_EXTENSION_free(ext);
}

// The TPM manufacturer/model/version directoryName of a TPM EK certificate's SAN.
void add_tpm_san(X509* cert) {
  name_ptr dir{X509_NAME_new()};
  const std::pair<const char*, const char*> parts[] = {
    {"2.23.133.2.1", "id:00001014"}, {"2.23.133.2.2", "swtpm"}, {"2.23.133.2.3", "id:20191023"}};
  for (const auto& [oid, value] : parts) {
    ASN1_OBJECT* obj = OBJ_txt2obj(oid, 1);
    check(obj != nullptr &&
            X509_NAME_add_entry_by_OBJ(dir.get(), obj, MBSTRING_UTF8,
                                       reinterpret_cast<const unsigned char*>(value), -1, -1,
                                       0) == 1,
          "SAN directoryName");
    ASN1_OBJECT_free(obj);
  }
  gens_ptr gens{sk_GENERAL_NAME_new_null()};
  GENERAL_NAME* gen = GENERAL_NAME_new();
  check(gens && gen, "GENERAL_NAME");
  gen->type = GEN_DIRNAME;
  gen->d.directoryName = dir.release();
  sk_GENERAL_NAME_push(gens.get(), gen);
  check(X509_add1_ext_i2d(cert, NID_subject_alt_name, gens.get(), 1, X509V3_ADD_DEFAULT) == 1,
        "SAN");
}

enum class cert_kind { root, intermediate, ek };

std::string make_cert(cert_kind kind, const char* cn, EVP_PKEY* subject_key, X509* issuer,
                      EVP_PKEY* issuer_key, long serial) {
  platform::x509_ptr cert{X509_new()};
  check(cert != nullptr, "X509_new");
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
  name_ptr subject = cn_name(cn);
  X509_set_subject_name(cert.get(), subject.get());
  X509_set_issuer_name(cert.get(),
                       issuer != nullptr ? X509_get_subject_name(issuer) : subject.get());
  check(X509_set_pubkey(cert.get(), subject_key) == 1, "X509_set_pubkey");
  X509* ctx_issuer = issuer != nullptr ? issuer : cert.get();
  if (kind == cert_kind::ek) {
    add_ext(cert.get(), ctx_issuer, NID_ext_key_usage, "2.23.133.8.1");
    add_tpm_san(cert.get());
    add_ext(cert.get(), ctx_issuer, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(cert.get(), ctx_issuer, NID_authority_key_identifier, "keyid:always");
    add_ext(cert.get(), ctx_issuer, NID_key_usage, "critical,keyEncipherment");
  } else {
    add_ext(cert.get(), ctx_issuer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(cert.get(), ctx_issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    add_ext(cert.get(), ctx_issuer, NID_subject_key_identifier, "hash");
  }
  check(X509_sign(cert.get(), issuer_key, EVP_sha256()) > 0, "X509_sign");
  auto der = platform::certificate_der(cert.get());
  if (!der)
    throw std::runtime_error(der.error());
  return *der;
}

platform::x509_ptr parse(const std::string& der) {
  auto cert = platform::parse_certificate(der);
  if (!cert)
    throw std::runtime_error(cert.error());
  return std::move(*cert);
}

struct world {
  std::vector<platform::pkey_ptr> keys; // owns every key below
  soft_tpm tpm1, tpm2;
  std::string ca_pem, other_ca_pem, ek_from_other_ca;

  world() {
    EVP_PKEY* root_key = test_key();
    EVP_PKEY* other_root_key = other_key();
    auto take = [&] {
      keys.push_back(new_key());
      return keys.back().get();
    };
    EVP_PKEY* issuer_key = take();
    const std::string root = make_cert(cert_kind::root, "test-ek-rootca", root_key, nullptr,
                                       root_key, 1);
    auto root_cert = parse(root);
    const std::string issuer =
      make_cert(cert_kind::intermediate, "test-ek-ca", issuer_key, root_cert.get(), root_key, 2);
    auto issuer_cert = parse(issuer);
    const std::string other_root = make_cert(cert_kind::root, "other-ek-rootca", other_root_key,
                                             nullptr, other_root_key, 3);
    auto other_root_cert = parse(other_root);
    ca_pem = platform::pem_encode(root, "CERTIFICATE") + platform::pem_encode(issuer, "CERTIFICATE");
    other_ca_pem = platform::pem_encode(other_root, "CERTIFICATE");

    long serial = 10;
    for (soft_tpm* t : {&tpm1, &tpm2}) {
      t->ek = take();
      t->ak = take();
      t->binding = take();
      t->ek_cert_der =
        make_cert(cert_kind::ek, "unknown", t->ek, issuer_cert.get(), issuer_key, serial++);
    }
    ek_from_other_ca = make_cert(cert_kind::ek, "unknown", tpm1.ek, other_root_cert.get(),
                                 other_root_key, serial++);
  }
};

world& the_world() {
  static world w;
  return w;
}

std::string u16_be(std::size_t v) {
  return std::string{static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
}

// Reads a big-endian u16 size and that many bytes from `in`, advancing it.
result<std::string> take_sized(std::string_view& in, const char* what) {
  if (in.size() < 2)
    return fail(std::string(what) + " is truncated");
  const std::size_t n = (static_cast<unsigned char>(in[0]) << 8) | static_cast<unsigned char>(in[1]);
  if (in.size() < 2 + n)
    return fail(std::string(what) + " is truncated");
  std::string out(in.substr(2, n));
  in.remove_prefix(2 + n);
  return out;
}

} // namespace

TPMT_PUBLIC rsa_public_area(EVP_PKEY* key, TPMA_OBJECT attributes, TPM2_ALG_ID scheme) {
  TPMT_PUBLIC p{};
  p.type = TPM2_ALG_RSA;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = attributes;
  p.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
  p.parameters.rsaDetail.scheme.scheme = scheme;
  if (scheme != TPM2_ALG_NULL)
    p.parameters.rsaDetail.scheme.details.anySig.hashAlg = TPM2_ALG_SHA256;
  p.parameters.rsaDetail.keyBits = 2048;
  p.parameters.rsaDetail.exponent = 0;
  BIGNUM* n = nullptr;
  check(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) == 1, "modulus");
  platform::bn_ptr owned{n};
  p.unique.rsa.size = 256;
  check(BN_bn2binpad(n, p.unique.rsa.buffer, 256) == 256, "modulus bytes");
  return p;
}

std::string marshalled_public(EVP_PKEY* key, TPMA_OBJECT attributes, TPM2_ALG_ID scheme) {
  auto bytes = sim::tpm::marshal_public(rsa_public_area(key, attributes, scheme));
  if (!bytes)
    throw std::runtime_error(bytes.error());
  return *bytes;
}

std::string tpm_name(std::string_view tpm2b_public) {
  return u16_be(TPM2_ALG_SHA256) + platform::sha256(tpm2b_public.substr(2));
}

const soft_tpm& soft_tpm::first() { return the_world().tpm1; }
const soft_tpm& soft_tpm::second() { return the_world().tpm2; }
const std::string& soft_tpm::ca_pem() { return the_world().ca_pem; }
const std::string& soft_tpm::other_ca_pem() { return the_world().other_ca_pem; }
const std::string& soft_tpm::ek_cert_from_other_ca() { return the_world().ek_from_other_ca; }

result<std::string> soft_tpm::activate(std::string_view credential_blob,
                                       std::string_view encrypted_secret,
                                       std::string_view object_name) const {
  auto secret = take_sized(encrypted_secret, "encrypted secret");
  if (!secret)
    return secret.fail();
  platform::pkey_ctx_ptr ctx{EVP_PKEY_CTX_new_from_pkey(nullptr, ek, nullptr)};
  static const char label[] = "IDENTITY";
  void* label_copy = OPENSSL_memdup(label, sizeof label);
  if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx.get(), "SHA256", nullptr) != 1 ||
      EVP_PKEY_CTX_set0_rsa_oaep_label(ctx.get(), label_copy, sizeof label) != 1) {
    OPENSSL_free(label_copy);
    return fail(platform::drain_openssl_errors("activate: OAEP setup"));
  }
  std::string seed(256, '\0');
  std::size_t len = seed.size();
  if (EVP_PKEY_decrypt(ctx.get(), reinterpret_cast<unsigned char*>(seed.data()), &len,
                       as_bytes(*secret), secret->size()) != 1)
    return fail(platform::drain_openssl_errors("activate: the seed does not decrypt with this EK"));
  seed.resize(len);

  auto id_object = take_sized(credential_blob, "credential blob");
  if (!id_object)
    return id_object.fail();
  std::string_view rest = *id_object;
  auto outer_hmac = take_sized(rest, "integrity HMAC");
  if (!outer_hmac)
    return outer_hmac.fail();
  auto hmac_key = sim::tpm::kdfa_sha256(seed, "INTEGRITY", {}, {}, 256);
  if (!hmac_key)
    return hmac_key.fail();
  const std::string mac_input = std::string(rest) + std::string(object_name);
  unsigned char mac[EVP_MAX_MD_SIZE];
  std::size_t mac_len = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, as_bytes(*hmac_key),
                hmac_key->size(), as_bytes(mac_input), mac_input.size(), mac, sizeof mac,
                &mac_len) == nullptr)
    return fail(platform::drain_openssl_errors("activate: HMAC"));
  if (std::string(reinterpret_cast<char*>(mac), mac_len) != *outer_hmac)
    return fail("activate: integrity check failed (TPM_RC_INTEGRITY)");

  auto sym_key = sim::tpm::kdfa_sha256(seed, "STORAGE", object_name, {}, 128);
  if (!sym_key)
    return sym_key.fail();
  cipher_ctx_ptr cipher{EVP_CIPHER_CTX_new()};
  const unsigned char iv[16] = {0};
  std::string plain(rest.size() + 16, '\0');
  int n = 0, tail = 0;
  if (!cipher ||
      EVP_DecryptInit_ex2(cipher.get(), EVP_aes_128_cfb128(), as_bytes(*sym_key), iv, nullptr) != 1 ||
      EVP_DecryptUpdate(cipher.get(), reinterpret_cast<unsigned char*>(plain.data()), &n,
                        as_bytes(rest), static_cast<int>(rest.size())) != 1 ||
      EVP_DecryptFinal_ex(cipher.get(), reinterpret_cast<unsigned char*>(plain.data()) + n,
                          &tail) != 1)
    return fail(platform::drain_openssl_errors("activate: AES-128-CFB"));
  plain.resize(static_cast<std::size_t>(n + tail));
  std::string_view p = plain;
  auto credential = take_sized(p, "credential");
  if (!credential)
    return credential.fail();
  return credential;
}

soft_tpm::certify_output soft_tpm::certify(std::string_view certified_name, std::string_view nonce,
                                           std::uint32_t magic, TPM2_ST type) const {
  TPMS_ATTEST info{};
  info.magic = magic;
  info.type = type;
  info.qualifiedSigner.size = 34;
  std::memset(info.qualifiedSigner.name, 0x5a, 34);
  info.extraData.size = static_cast<UINT16>(nonce.size());
  std::memcpy(info.extraData.buffer, nonce.data(), nonce.size());
  info.clockInfo.clock = 123456;
  info.clockInfo.safe = 1;
  info.firmwareVersion = 0x2019102300000000ull;
  info.attested.certify.name.size = static_cast<UINT16>(certified_name.size());
  std::memcpy(info.attested.certify.name.name, certified_name.data(), certified_name.size());
  info.attested.certify.qualifiedName = info.qualifiedSigner;
  std::vector<std::uint8_t> buf(sizeof(TPMS_ATTEST) + 64);
  std::size_t offset = 0;
  if (Tss2_MU_TPMS_ATTEST_Marshal(&info, buf.data(), buf.size(), &offset) != TSS2_RC_SUCCESS)
    throw std::runtime_error("TPMS_ATTEST does not marshal");
  certify_output out;
  out.attest.assign(reinterpret_cast<const char*>(buf.data()), offset);

  auto sig = platform::sign_rs256(ak, out.attest);
  if (!sig)
    throw std::runtime_error(sig.error());
  TPMT_SIGNATURE s{};
  s.sigAlg = TPM2_ALG_RSASSA;
  s.signature.rsassa.hash = TPM2_ALG_SHA256;
  s.signature.rsassa.sig.size = static_cast<UINT16>(sig->size());
  std::memcpy(s.signature.rsassa.sig.buffer, sig->data(), sig->size());
  offset = 0;
  std::vector<std::uint8_t> sbuf(sizeof(TPMT_SIGNATURE) + 16);
  if (Tss2_MU_TPMT_SIGNATURE_Marshal(&s, sbuf.data(), sbuf.size(), &offset) != TSS2_RC_SUCCESS)
    throw std::runtime_error("TPMT_SIGNATURE does not marshal");
  out.signature.assign(reinterpret_cast<const char*>(sbuf.data()), offset);
  return out;
}

} // namespace msiv2::test
