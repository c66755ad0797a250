#include "tests/fuzz/fuzz_common.hpp"

#include <cstdio>
#include <cstdlib>

#include "platform/binding.hpp"
#include "platform/keys.hpp"

namespace msiv2::fuzz {

namespace {

// Made with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` for the fuzz
// targets; not a secret of anything.
constexpr const char* fixed_key_pem = R"(-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDST0RjC73SjB/s
y6tGxGTofLSU9ypTYjIGpr2RA5H+fj+CVxVegWKHcLlBy0FvUHiGSLc/10Vr5nK+
vzvGQ5PGmIa8rak30Il6JtFvK/UU5iP2k7NOY6F2afieLbPpYk5ykTWyTzmze4iI
AdUT/QMcE3+owoDSpivsbm9kdH1g9eIue7XMYBcDTnOWMiY4i/qXMmRkic9NZ0Pd
W/PbQhyTuHr/rgXWvVCnMvu+ftbbbJqXAWmBpC1m/nJSh511iKMLOoOURUqAFGnq
YsK3NBuhzsAKOOuuYq0VZl7y+n153JOsE24P1qugPH1p8eIbKrUynaJLnfJcrfnH
+OI4hn+zAgMBAAECggEAEKEP6Tz+b22BALpB+sCAshlaNgUtJZa4GeqJRrQfkR3u
a6HzIJvebJMvMtKdg+26+fM5+iRNavC31flNAqpJPwTEcprQrIcit7PmD4JMSLDB
2zdmkCY0mCZc8DTw6t1JEqoEsuqsx1JXQ1nRvVjeLBQmnfNzODTHeFRrHmhPmaDy
3hnV5HmU2K0h7KYvcm+GxYunCY3XiEloY6qwBRCGfCiypApwMQ863RfFCXZyIz7m
rKSxu1k/I8nm+rwW2qjw3M8RyssKtYgHFJgyFcxshvzATan7RT4nLHoxtJnYESNc
ABTjRYo7BRFG/FIIoVsiT7DKRc50bl7YFdTCmmMVIQKBgQDxlxW5d/17JxVeZJ3K
9kks06cQh65YYyJjjkLvw3N6BxuWi3uOjxWFPAjboEBXpEf333Snd74JJmkMc2rr
Qm1AyuloWFyYpfDlc8xG2ymJfFEB66WKPH/8c6Vy4wh7PepA6KlwK5u2ypgnnbYC
MqxKxz2xloLmZlpwjjdcBQBJ2QKBgQDe2ozQ1zoiBdIAQhMEk9MYmp5eLXAC6dPP
wXWC+BB12zO51USJFuAEgtibKp7AV5khAqv2GyQqhkmT4eyyqBm6TC02BD3KB9kv
203trne7kwBMFGKGiNYfECX9Nv64rQGU4/mvH7wQog1DC4RALEjhb92FeeLqIXDC
ZkZLdI1yawKBgEo3dMgOUYOUxR7DYCoqsN4hgzAzzl5+zeCxomSPsZjqOBJudR2d
XSoaAEqgF0QVRrqiHe8YfPvInfriNhVhybhe3YddpcyLJc8HXNjjmQYQd75USv2F
infeexQpJMDfi2g3UV4RN3vXDxkUfQZ91KoAPTaiG0J2bRAo0F7ndmg5AoGBAIWD
qpn0WH/JvOcqrvovFmnHONpznoggTyZJYX314Oa7TWIow8beTZhmTB+qiTHzSWrd
jukDmcdgbPSMhqMC02cp/GxAXkSMLzLc0PN1c4aNq7/o9p5jnOU/Z4MtT66U+D2b
2Btzh9jvPcLNQ46u+XsW6kDtpWVgY44UeEj8q0HBAoGAOCed4bUbE7K8sO8HGqh6
TY4ZqqpZRP61V3Oy7HkolPrcXIiuGA9jAdK5tmJpu5/fhr8z/0K6W33ZIFoM+wo5
gRevmcWm8+fmzg3XE40Sra4VZXemPe9IPbRfi9TrvSKM0a5fA33I5KJnazfxuWPE
PIRIn+5nhaHHDRyl/ZkAakA=
-----END PRIVATE KEY-----
)";

} // namespace

const key_ref& fixed_key() {
  static const key_ref key = [] {
    auto pkey = platform::private_key_from_pem(fixed_key_pem);
    require(pkey.ok(), "the fixed fuzz key parses");
    auto spki = platform::public_key_der(pkey->get());
    auto id = platform::key_id(pkey->get());
    require(spki.ok() && id.ok(), "the fixed fuzz key has a public key and a key id");
    key_ref ref;
    ref.spki_der = *spki;
    ref.key_id = *id;
    ref.key = std::make_shared<const binding_key>(std::move(*pkey), *id);
    return ref;
  }();
  return key;
}

void require(bool condition, const char* what) {
  if (condition)
    return;
  std::fprintf(stderr, "fuzz property broken: %s\n", what);
  std::abort();
}

} // namespace msiv2::fuzz
