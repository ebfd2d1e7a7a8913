#!/usr/bin/env bash
# Rebuild the sample RPMs, the sample keys and the signed variants used by the
# reconciler's tests and its demo.  Writes into reconciler/samples/:
#
#   rpms/unsigned/*.rpm   binaries, -debuginfo and .src.rpm, unsigned
#   rpms/signed/*.rpm     the same, signed with the sample SIG key
#   rpms/otherkey/*.rpm   the same, signed with an unrelated "other" key
#   keys/RPM-GPG-KEY-sample-sig, keys/RPM-GPG-KEY-other   (armored public keys)
#
# The keys are throwaway keys generated on every run: their secret halves are
# deleted with the temporary directory.  Needs rpmbuild, rpmsign, rpmkeys, gpg.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
SPECS="${SCRIPT_DIR}/specs"
OUT="${REPO_ROOT}/reconciler/samples"

ARCHES=(x86_64 aarch64 ppc64le s390x)
ARCH_SPECS=(sig-hello-1.0.spec sig-hello-1.1.spec sig-tools.spec)
NOARCH_SPECS=(sig-data.spec)

SAMPLE_UID="Sample SIG (reconciler test key, not for production) <sample-sig@example.org>"
OTHER_UID="Other Key (reconciler test key, not for production) <other-key@example.org>"

# Fixed time, locale and host so that rebuilds are as reproducible as rpm allows.
export SOURCE_DATE_EPOCH=1767225600 # 2026-01-01T00:00:00Z
export TZ=UTC LC_ALL=C

for tool in rpmbuild rpmsign rpmkeys gpg gpgconf; do
    command -v "${tool}" >/dev/null || { echo "build.sh: ${tool} not found" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sig-rpms.XXXXXX")"
export GNUPGHOME="${WORK}/gnupg"
cleanup() {
    gpgconf --kill all >/dev/null 2>&1 || true
    rm -rf -- "${WORK}"
}
trap cleanup EXIT

RPMBUILD_ARGS=(
    --quiet
    --define "_topdir ${WORK}/topdir"
    --define "_buildhost sample-builder.example.org"
    --define "packager Sample SIG <sig@example.org>"
    --define "vendor Sample SIG"
    --define "dist %{nil}"
    --define "use_source_date_epoch_as_buildtime 1"
    --define "clamp_mtime_to_source_date_epoch 1"
    --define "_binary_payload w9.gzdio"
    --define "_source_payload w9.gzdio"
    --define "_binary_filedigest_algorithm 8"
    --define "_source_filedigest_algorithm 8"
    --define "_build_id_links none"
)

build_rpms() {
    local spec arch
    for spec in "${ARCH_SPECS[@]}"; do
        rpmbuild "${RPMBUILD_ARGS[@]}" -bs "${SPECS}/${spec}" >/dev/null
        for arch in "${ARCHES[@]}"; do
            rpmbuild "${RPMBUILD_ARGS[@]}" -bb --target "${arch}" "${SPECS}/${spec}" >/dev/null
        done
    done
    for spec in "${NOARCH_SPECS[@]}"; do
        rpmbuild "${RPMBUILD_ARGS[@]}" -ba "${SPECS}/${spec}" >/dev/null
    done
}

# quietly CMD...: run CMD with its stderr kept aside, shown only if it fails
# (gpg warns about the faked system time on every call).
quietly() {
    local log="${WORK}/stderr.log"
    if ! "$@" 2>"${log}"; then
        cat -- "${log}" >&2
        return 1
    fi
}

# new_key UID: generate a passwordless RSA signing key, print its fingerprint.
new_key() {
    quietly gpg --batch --passphrase '' --quick-gen-key "$1" rsa3072 sign never
    quietly gpg --batch --with-colons --list-secret-keys "$1" | awk -F: '$1 == "fpr" { print $10; exit }'
}

# sign_set DIR FINGERPRINT: sign every RPM in DIR (in place) with that key.
sign_set() {
    local dir="$1" fpr="$2"
    local rpms=("${dir}"/*.rpm)
    # rpmsign warns when stdin is not a tty unless GPG_TTY is set; the key has
    # no passphrase, so no pinentry is ever needed.
    GPG_TTY=/dev/null quietly rpmsign --addsign \
        --define "__gpg $(command -v gpg)" \
        --define "_gpg_path ${GNUPGHOME}" \
        --define "_gpg_name ${fpr}" \
        --define "_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback" \
        "${rpms[@]}" >/dev/null
}

# check_set DIR KEYFILE EXPECTED: rpmkeys --checksig every RPM in DIR against
# a private rpmdb holding only KEYFILE (none if empty); fail unless each line
# ends with EXPECTED.
check_set() {
    local dir="$1" key="$2" expected="$3"
    local db
    db="$(mktemp -d "${WORK}/rpmdb.XXXXXX")"
    if [[ -n "${key}" ]]; then
        rpmkeys --dbpath "${db}" --import "${key}"
    fi
    local rpm line
    for rpm in "${dir}"/*.rpm; do
        line="$(rpmkeys --dbpath "${db}" --checksig "${rpm}")"
        if [[ "${line}" != "${rpm}: ${expected}" ]]; then
            echo "build.sh: unexpected checksig result: ${line}" >&2
            exit 1
        fi
    done
}

main() {
    build_rpms

    # Everything is prepared and checked in STAGE, then replaces OUT's copy.
    local stage="${WORK}/out"
    mkdir -p "${stage}/keys"
    local set
    for set in unsigned signed otherkey; do
        mkdir -p "${stage}/rpms/${set}"
        find "${WORK}/topdir/RPMS" "${WORK}/topdir/SRPMS" -name '*.rpm' \
            -exec cp -- {} "${stage}/rpms/${set}/" \;
    done

    mkdir -p "${GNUPGHOME}"
    chmod 700 "${GNUPGHOME}"
    # Throwaway keys in a throwaway keyring: skip the web-of-trust bookkeeping.
    # Date keys and signatures at SOURCE_DATE_EPOCH, never in a verifier's
    # future (rpm-sequoia rejects those); RSA signatures are then reproducible
    # for a given key.
    printf 'trust-model always\nfaked-system-time %s!\n' "${SOURCE_DATE_EPOCH}" \
        >"${GNUPGHOME}/gpg.conf"
    local sample_fpr other_fpr
    sample_fpr="$(new_key "${SAMPLE_UID}")"
    other_fpr="$(new_key "${OTHER_UID}")"
    quietly gpg --batch --armor --export "${sample_fpr}" >"${stage}/keys/RPM-GPG-KEY-sample-sig"
    quietly gpg --batch --armor --export "${other_fpr}" >"${stage}/keys/RPM-GPG-KEY-other"

    sign_set "${stage}/rpms/signed" "${sample_fpr}"
    sign_set "${stage}/rpms/otherkey" "${other_fpr}"

    check_set "${stage}/rpms/unsigned" "" "digests OK"
    check_set "${stage}/rpms/signed" "${stage}/keys/RPM-GPG-KEY-sample-sig" "digests signatures OK"
    check_set "${stage}/rpms/otherkey" "${stage}/keys/RPM-GPG-KEY-other" "digests signatures OK"

    mkdir -p "${OUT}"
    local dir
    for dir in rpms keys; do
        rm -rf -- "${OUT:?}/${dir}"
        cp -R -- "${stage}/${dir}" "${OUT}/${dir}"
    done

    echo "sample key ${sample_fpr}: ${SAMPLE_UID}"
    echo "other key  ${other_fpr}: ${OTHER_UID}"
    echo "wrote $(find "${OUT}/rpms" -name '*.rpm' | wc -l) RPMs under ${OUT}/rpms ($(du -sh "${OUT}/rpms" | cut -f1))"
}

main "$@"
