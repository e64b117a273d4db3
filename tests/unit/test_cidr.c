/* core/cidr: metrics.allow entries, addresses and networks of both
 * families, matched against peer addresses. */
#include "cidr.h"
#include "safemessenger/testhost_suite.h"

static int in(const char *net, const char *addr)
{
    cidr c;
    CU_ASSERT_EQUAL_FATAL(cidr_parse(net, &c), 0);
    return cidr_contains(&c, addr);
}

static void bare_address_matches_only_itself(void)
{
    CU_ASSERT_TRUE(in("127.0.0.1", "127.0.0.1"));
    CU_ASSERT_FALSE(in("127.0.0.1", "127.0.0.2"));
    CU_ASSERT_TRUE(in("::1", "::1"));
    CU_ASSERT_FALSE(in("::1", "127.0.0.1"));
    CU_ASSERT_FALSE(in("127.0.0.1", "not an address"));
}

static void networks_match_their_prefix(void)
{
    CU_ASSERT_TRUE(in("10.0.0.0/8", "10.255.1.2"));
    CU_ASSERT_FALSE(in("10.0.0.0/8", "11.0.0.1"));
    CU_ASSERT_TRUE(in("192.168.4.0/22", "192.168.7.255"));
    CU_ASSERT_FALSE(in("192.168.4.0/22", "192.168.8.0"));
    CU_ASSERT_TRUE(in("0.0.0.0/0", "203.0.113.9"));
    CU_ASSERT_TRUE(in("fd00::/8", "fd12:3456::1"));
    CU_ASSERT_FALSE(in("fd00::/8", "fe80::1"));
    CU_ASSERT_TRUE(in("2001:db8::/33", "2001:db8:7fff::1"));
    CU_ASSERT_FALSE(in("2001:db8::/33", "2001:db8:8000::1"));
}

static void ipv4_mapped_addresses_are_ipv4(void)
{
    CU_ASSERT_TRUE(in("127.0.0.1", "::ffff:127.0.0.1"));
    CU_ASSERT_TRUE(in("::ffff:10.0.0.0/104", "10.1.2.3"));
    CU_ASSERT_FALSE(in("::ffff:10.0.0.0/104", "11.1.2.3"));
}

static void malformed_entries_are_refused(void)
{
    cidr c;
    CU_ASSERT_EQUAL(cidr_parse("", &c), -1);
    CU_ASSERT_EQUAL(cidr_parse("localhost", &c), -1);
    CU_ASSERT_EQUAL(cidr_parse("10.0.0.0/33", &c), -1);
    CU_ASSERT_EQUAL(cidr_parse("10.0.0.0/", &c), -1);
    CU_ASSERT_EQUAL(cidr_parse("10.0.0.0/-1", &c), -1);
    CU_ASSERT_EQUAL(cidr_parse("10.0.0.0/8x", &c), -1);
    CU_ASSERT_EQUAL(cidr_parse("::/129", &c), -1);
    /* Host bits past the prefix: most likely a typo for another network. */
    CU_ASSERT_EQUAL(cidr_parse("10.0.0.1/8", &c), -1);
    CU_ASSERT_EQUAL(cidr_parse("::ffff:10.0.0.0/95", &c), -1);
}

static const sm_test_case cases[] = {
    SM_TEST(bare_address_matches_only_itself),
    SM_TEST(networks_match_their_prefix),
    SM_TEST(ipv4_mapped_addresses_are_ipv4),
    SM_TEST(malformed_entries_are_refused),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("cidr", cases, NULL, NULL);
}
