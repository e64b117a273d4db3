#include "settings.h"

int settings_read(const sm_host *h, sm_plugin *self, int warn, auth_settings *out)
{
    int64_t m_kib = OWASP_M_KIB, passes = OWASP_PASSES, lanes = 1;
    int64_t max_concurrent = 2, max_queued = 256, failed = 5, window = 60, regs = 20;
    int64_t key_bytes = 8192, keys = 100000, per_address = 2, per_user = 50;
    int allow_weak = 0;
    /* Read every key before failing, so that each error is reported. */
    int rcs[] = {
        h->config_int(self, "argon2_memory_kib", 8, 4194304, &m_kib),
        h->config_int(self, "argon2_passes", 1, 64, &passes),
        h->config_int(self, "argon2_lanes", 1, 16, &lanes),
        h->config_bool(self, "allow_weak_argon2", &allow_weak),
        h->config_int(self, "max_concurrent_hashes", 1, 64, &max_concurrent),
        h->config_int(self, "max_queued_hashes", 0, 100000, &max_queued),
        h->config_int(self, "max_hashes_per_address", 1, 100000, &per_address),
        h->config_int(self, "failed_logins", 1, 1000, &failed),
        h->config_int(self, "failed_login_window", 1, 86400, &window),
        h->config_int(self, "failed_logins_per_user", 2, 1000000, &per_user),
        h->config_int(self, "registrations_per_hour", 1, 100000, &regs),
        h->config_int(self, "max_public_key_bytes", 256, 65536, &key_bytes),
        h->config_int(self, "max_tracked_keys", 1, 10000000, &keys),
    };
    for (size_t i = 0; i < sizeof rcs / sizeof rcs[0]; i++)
        if (rcs[i] != SM_OK)
            return SM_EINVAL;
    if (m_kib < 8 * lanes) {
        h->log(self, SM_LOG_ERROR,
               "auth.argon2_memory_kib must be at least 8 x argon2_lanes (%lld KiB for %lld "
               "lanes)",
               (long long)(8 * lanes), (long long)lanes);
        return SM_EINVAL;
    }
    if (per_user <= failed) {
        /* Each address may fail `failed_logins` times: at or below that,
         * one address alone could throttle a user for everyone. */
        h->log(self, SM_LOG_ERROR,
               "auth.failed_logins_per_user (%lld) must be greater than auth.failed_logins "
               "(%lld), or one address could lock a user out",
               (long long)per_user, (long long)failed);
        return SM_EINVAL;
    }
    int weak = m_kib < OWASP_M_KIB || passes < OWASP_PASSES;
    if (weak && !allow_weak) {
        h->log(self, SM_LOG_ERROR,
               "argon2id parameters m=%lld KiB, t=%lld are below the OWASP minimum "
               "(argon2_memory_kib >= %d, argon2_passes >= %d, argon2_lanes >= 1); raise them, "
               "or set auth.allow_weak_argon2 = true (benchmarks and tests only)",
               (long long)m_kib, (long long)passes, OWASP_M_KIB, OWASP_PASSES);
        return SM_EINVAL;
    }
    if (weak && warn)
        h->log(self, SM_LOG_WARNING,
               "weak argon2id parameters m=%lld KiB, t=%lld allowed by "
               "auth.allow_weak_argon2: not for production",
               (long long)m_kib, (long long)passes);
    out->argon2.m_kib = (uint32_t)m_kib;
    out->argon2.passes = (uint32_t)passes;
    out->argon2.lanes = (uint32_t)lanes;
    out->max_concurrent_hashes = (size_t)max_concurrent;
    out->max_queued_hashes = (size_t)max_queued;
    out->max_hashes_per_address = (size_t)per_address;
    out->failed_logins = (size_t)failed;
    out->failed_login_window = (double)window;
    out->failed_logins_per_user = (size_t)per_user;
    out->registrations_per_hour = (size_t)regs;
    out->max_public_key_bytes = (size_t)key_bytes;
    out->max_tracked_keys = (size_t)keys;
    return SM_OK;
}
