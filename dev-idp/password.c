// SPDX-License-Identifier: MIT
//
// Password hashing for the dev IdP: PBKDF2-HMAC-SHA256 from OpenSSL with
// a random 16-byte salt, stored as "pbkdf2-sha256$<iter>$<salt>$<key>"
// (hex). The iteration count is stored with the hash, so it can be raised
// later without breaking old rows. Comparison is constant-time
// (CRYPTO_memcmp). No hand-written crypto here: OpenSSL does the work.
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/util.h"
#include "dev-idp/idp.h"

// The scheme tag at the start of every stored hash.
#define SCHEME "pbkdf2-sha256"

static cm_err
derive(const char *pw, size_t len, const unsigned char *salt, int iter,
    unsigned char key[IDP_PBKDF2_KEY_LEN])
{
	int ok;

	// OpenSSL wants a non-NULL pointer even for an empty password.
	ok = PKCS5_PBKDF2_HMAC(len > 0 ? pw : "", (int) len, salt,
	    IDP_PBKDF2_SALT_LEN, iter, EVP_sha256(), IDP_PBKDF2_KEY_LEN, key);
	if (ok != 1) {
		return (CM_EINTERNAL);
	}
	return (CM_OK);
}

cm_err
idp_password_hash(
    const char *pw, size_t len, int iter, char out[IDP_PWHASH_MAX])
{
	unsigned char salt[IDP_PBKDF2_SALT_LEN];
	unsigned char key[IDP_PBKDF2_KEY_LEN];
	char          salt_hex[2 * IDP_PBKDF2_SALT_LEN + 1];
	char          key_hex[2 * IDP_PBKDF2_KEY_LEN + 1];
	char          buf[IDP_PWHASH_MAX];
	cm_err        rv;
	int           n;

	if (len > IDP_PASSWORD_MAX || iter < 1 || iter > IDP_PBKDF2_ITER_MAX) {
		rv = CM_EINVAL;
		goto out;
	}
	cm_random_bytes(salt, sizeof(salt));
	rv = derive(pw, len, salt, iter, key);
	if (rv != CM_OK) {
		goto out;
	}
	cm_hex(salt, sizeof(salt), salt_hex);
	cm_hex(key, sizeof(key), key_hex);
	n = snprintf(
	    buf, sizeof(buf), SCHEME "$%d$%s$%s", iter, salt_hex, key_hex);
	if (n < 0 || (size_t) n >= sizeof(buf)) {
		rv = CM_EINTERNAL;
		goto out;
	}
	memcpy(out, buf, (size_t) n + 1);
	rv = CM_OK;
out:
	OPENSSL_cleanse(key, sizeof(key));
	return (rv);
}

cm_err
idp_password_verify(const char *pw, size_t len, const char *stored)
{
	unsigned char salt[IDP_PBKDF2_SALT_LEN];
	unsigned char want[IDP_PBKDF2_KEY_LEN];
	unsigned char got[IDP_PBKDF2_KEY_LEN];
	char          iterbuf[16];
	const char   *p, *d1, *d2;
	int64_t       iter;
	size_t        slen;
	cm_err        rv;

	memset(got, 0, sizeof(got));
	if (stored == NULL || len > IDP_PASSWORD_MAX) {
		rv = CM_EINVAL;
		goto out;
	}
	slen = strnlen(stored, IDP_PWHASH_MAX);
	if (slen >= IDP_PWHASH_MAX ||
	    strncmp(stored, SCHEME "$", strlen(SCHEME) + 1) != 0) {
		rv = CM_EINVAL;
		goto out;
	}
	p  = stored + strlen(SCHEME) + 1;
	d1 = strchr(p, '$');
	if (d1 == NULL || (size_t) (d1 - p) >= sizeof(iterbuf)) {
		rv = CM_EINVAL;
		goto out;
	}
	memcpy(iterbuf, p, (size_t) (d1 - p));
	iterbuf[d1 - p] = '\0';
	rv              = cm_parse_i64(iterbuf, 1, IDP_PBKDF2_ITER_MAX, &iter);
	if (rv != CM_OK) {
		goto out;
	}
	d2 = strchr(d1 + 1, '$');
	if (d2 == NULL) {
		rv = CM_EINVAL;
		goto out;
	}
	rv = cm_unhex(d1 + 1, (size_t) (d2 - d1 - 1), salt, sizeof(salt));
	if (rv != CM_OK) {
		goto out;
	}
	rv = cm_unhex(d2 + 1, strlen(d2 + 1), want, sizeof(want));
	if (rv != CM_OK) {
		goto out;
	}
	rv = derive(pw, len, salt, (int) iter, got);
	if (rv != CM_OK) {
		goto out;
	}
	rv = CRYPTO_memcmp(got, want, sizeof(got)) == 0 ? CM_OK : CM_EAUTH;
out:
	OPENSSL_cleanse(got, sizeof(got));
	return (rv);
}
