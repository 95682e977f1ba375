/* libFuzzer: the libconfig file reader and the environment reader. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/migshim-fuzz-config.%ld", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    struct config cfg;
    char err[512];
    config_defaults(&cfg);
    (void)!config_apply_file(&cfg, path, err, sizeof err);
    /* the same bytes as one environment variable's value */
    char *env = malloc(size + 32);
    if (env) {
        memcpy(env, "MIGSHIM_WAIT_TIMEOUT=", 21);
        memcpy(env + 21, data, size);
        env[21 + size] = '\0';
        char *envp[] = {env, NULL};
        (void)!config_apply_env(&cfg, envp, err, sizeof err);
        memcpy(env, "MIGSHIM_", 8);
        char *envq[] = {env, NULL};
        (void)!config_apply_env(&cfg, envq, err, sizeof err);
        free(env);
    }
    return 0;
}
