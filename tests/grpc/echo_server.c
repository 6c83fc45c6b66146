/*
 * echo_server.c: a server process with the test-only Echo service and a fake Generation
 * service (prompt words streamed back). Prints "PORT <n>" once listening, then serves until
 * SIGTERM/SIGINT and drains (grace 5 s); exits 0 when every in-flight call finished in time.
 * Usage: skv_echo_server [ADDRESS] (default 127.0.0.1:0).
 */
#include <stdio.h>

#include "base/log.h"
#include "tests/grpc/echo_service.h"

int main(int argc, char **argv)
{
    const char *address = argc > 1 ? argv[1] : "127.0.0.1:0";
    static skv_echo_state_t state;
    skv_grpc_method_t methods[16];
    size_t n = skv_echo_methods(&state, methods);
    n += skv_fake_generation_methods(methods + n);
    skv_grpc_server_config_t config = {
        .address = address, .n_threads = 2, .methods = methods, .n_methods = n};
    skv_grpc_signals_install();
    skv_grpc_server_t *server = NULL;
    if (skv_grpc_server_create(&config, &server) != SKV_STATUS_OK) {
        return 1;
    }
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", skv_grpc_server_port(server));
    skv_grpc_channel_t *self = NULL;
    if (skv_grpc_channel_create(target, NULL, &self) != SKV_STATUS_OK) {
        skv_grpc_server_destroy(server);
        return 1;
    }
    __atomic_store_n(&state.self, self, __ATOMIC_RELEASE);
    printf("PORT %d\n", skv_grpc_server_port(server));
    fflush(stdout);
    skv_status_t st = skv_grpc_server_wait_signal(server, 5000);
    skv_grpc_server_destroy(server);
    skv_echo_wait_idle(&state);
    skv_grpc_channel_destroy(state.self);
    SKV_LOG_INFO("echo_server: drained with %s", skv_status_str(st));
    return st == SKV_STATUS_OK ? 0 : 2;
}
