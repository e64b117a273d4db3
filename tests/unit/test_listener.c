#include "listener.h"
#include "safemessenger/testhost_suite.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void listener_accepts_ip_literals_only(void)
{
    char err[512];
    static const char *const good[] = {"0.0.0.0", "127.0.0.1", "::", "::1", "[::1]",
                                       "fe80::1%lo", "2001:db8::5"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(listener_check_address(good[i], err, sizeof err), 0);
        CU_ASSERT_STRING_EQUAL(err, "");
    }
    static const char *const bad[] = {"localhost", "example.org", "127.1", "127.0.0.256",
                                      "[::1", "::1]", "[]", "", "*", "1.2.3.4:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(listener_check_address(bad[i], err, sizeof err), -1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "server.bind"));
    }
    CU_ASSERT_EQUAL(listener_check_address(NULL, err, sizeof err), -1);
    CU_ASSERT_EQUAL(listener_check_address("fe80::1%no-such-if0", err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no network interface named \"no-such-if0\""));
}

static int v6only(int fd)
{
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len) != 0)
        return -1;
    return v;
}

static void listener_binds_exactly_and_reads_the_address_back(void)
{
    char err[512], where[LISTENER_ADDRESS_LEN], want[LISTENER_ADDRESS_LEN];
    int port = 0;
    int fd = listener_open("127.0.0.1", 0, err, sizeof err);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(listener_family(fd), AF_INET);
    CU_ASSERT_EQUAL(listener_local_address(fd, where, sizeof where, &port), 0);
    CU_ASSERT_TRUE(port > 0);
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CU_ASSERT_STRING_EQUAL(where, want);
    /* The same address and port again: the kernel's reason, verbatim. */
    char busy[512];
    int again = listener_open("127.0.0.1", port, busy, sizeof busy);
    CU_ASSERT_EQUAL(again, -1);
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d: %s", port, strerror(EADDRINUSE));
    CU_ASSERT_STRING_EQUAL(busy, want);
    close(fd);

    fd = listener_open("[::1]", 0, err, sizeof err);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(listener_family(fd), AF_INET6);
    CU_ASSERT_EQUAL(v6only(fd), 1);
    CU_ASSERT_EQUAL(listener_local_address(fd, where, sizeof where, &port), 0);
    snprintf(want, sizeof want, "[::1]:%d", port);
    CU_ASSERT_STRING_EQUAL(where, want);
    close(fd);

    /* "::" is dual-stack whatever the sysctl default. */
    fd = listener_open("::", 0, err, sizeof err);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(v6only(fd), 0);
    close(fd);
}

static void listener_shows_ipv4_peers_of_a_dual_stack_socket_as_ipv4(void)
{
    char err[512], where[LISTENER_ADDRESS_LEN], peer[LISTENER_ADDRESS_LEN];
    int port = 0;
    int fd = listener_open("::", 0, err, sizeof err);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(listener_local_address(fd, where, sizeof where, &port), 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_EQUAL_FATAL(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    int s = -1;
    for (int i = 0; i < 200 && s < 0; i++) {
        s = listener_accept(fd);
        if (s < 0)
            usleep(10000);
    }
    CU_ASSERT_FATAL(s >= 0);
    CU_ASSERT_EQUAL(listener_peer_address(s, peer, sizeof peer), 0);
    CU_ASSERT_STRING_EQUAL(peer, "127.0.0.1");
    /* Nothing else waiting: -1 with EAGAIN, not a block. */
    CU_ASSERT_EQUAL(listener_accept(fd), -1);
    CU_ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
    close(s);
    close(c);
    close(fd);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(listener_accepts_ip_literals_only),
        SM_TEST(listener_binds_exactly_and_reads_the_address_back),
        SM_TEST(listener_shows_ipv4_peers_of_a_dual_stack_socket_as_ipv4),
        SM_TEST_END,
    };
    return sm_test_run("listener", cases, NULL, NULL);
}
