# free_port.sh - sourced by the shell tests and benchmarks: free_port prints a
# loopback TCP port for a server to listen on.
#
# It picks below the kernel's range for outgoing connections
# (/proc/sys/net/ipv4/ip_local_port_range, 32768 up by default): a port from
# inside that range can be taken by any client socket of a test running beside
# this one between the pick and the server's bind(), which is how a run once
# failed with "Address already in use". Below it only another listener can
# collide, and a port something already accepts on is skipped.

free_port() {
    local low=32768 _hi port
    if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
        read -r low _hi </proc/sys/net/ipv4/ip_local_port_range
    fi
    [ "$low" -gt 12000 ] || low=32768
    for _ in $(seq 100); do
        port=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "free_port: no free port found below $low" >&2
    return 1
}
