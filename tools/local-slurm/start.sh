#!/usr/bin/env bash
# Start a one-node SLURM cluster on 127.0.0.1 (Debian 12, as root) for brainssl's CI
# and for trying the SLURM profile on a workstation. Idempotent: installs missing
# packages, leaves running daemons alone. With accounting (the default) slurmdbd runs
# on a local, socket-only MariaDB so that `sacct` answers as on a real cluster, which
# is what snakemake-executor-plugin-slurm polls.
#
#   BRAINSSL_SLURM_DIR         state, logs and pid files   (default /tmp/brainssl-slurm)
#   BRAINSSL_SLURM_ACCOUNTING  1 = slurmdbd + MariaDB       (default 1)
set -euo pipefail

DIR=${BRAINSSL_SLURM_DIR:-/tmp/brainssl-slurm}
ACCOUNTING=${BRAINSSL_SLURM_ACCOUNTING:-1}
CLUSTER=brainssl
DB_PASSWORD=brainssl-local   # socket-only local database, not a secret

say() { printf '[local-slurm %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() {
  say "ERROR: $*"
  for f in "$DIR"/log/*.log; do [[ -s $f ]] && { echo "--- $f"; tail -n 20 "$f"; }; done
  exit 1
}
# until_ok SECONDS CMD...: retry CMD every 0.25 s
until_ok() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do ((SECONDS < deadline)) || return 1; sleep 0.25; done
}
# alive PIDFILE NAME: the pid file names a live process called NAME
alive() { [[ -s $1 ]] && [[ $(cat "/proc/$(<"$1")/comm" 2>/dev/null) == "$2" ]]; }

[[ $(id -u) == 0 ]] || die "run as root (installs packages and starts daemons)"
started=$SECONDS

packages=(munge slurmctld slurmd slurm-client)
[[ $ACCOUNTING == 1 ]] && packages+=(slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$DIR"/{log,run,spool/ctld,spool/d}
chown -R slurm:slurm "$DIR"

# munge: the authentication daemon every SLURM daemon and client needs.
[[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge /var/log/munge /var/lib/munge
if ! alive /run/munge/munged.pid munged; then
  runuser -u munge -- /usr/sbin/munged --force
  until_ok 10 bash -c 'munge -n | unmunge' || die "munged did not start"
fi

# slurm.conf from what slurmd sees of this machine; no cgroups needed.
hardware=$(slurmd -C | head -n 1)
node=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$hardware")
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")
cpus_etc=$(sed -e 's/^NodeName=[^ ]* //' -e 's/RealMemory=[0-9]*//' <<<"$hardware")
if [[ $ACCOUNTING == 1 ]]; then
  accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
else
  accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat >/etc/slurm/slurm.conf.tmp <<CONF
# Written by brainssl tools/local-slurm/start.sh
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
DefMemPerCPU=500
MinJobAge=300
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
JobCompType=jobcomp/none
$accounting
NodeName=$node NodeAddr=127.0.0.1 $cpus_etc RealMemory=$((memory * 85 / 100)) State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mv /etc/slurm/slurm.conf.tmp /etc/slurm/slurm.conf && chmod 644 /etc/slurm/slurm.conf

if [[ $ACCOUNTING == 1 ]]; then
  install -d -o mysql -g root -m 755 /run/mysqld
  [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  if ! alive /run/mysqld/mysqld.pid mariadbd; then
    nohup /usr/sbin/mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/mysqld.pid --innodb-buffer-pool-size=64M >"$DIR/log/mariadb.log" 2>&1 &
    until_ok 60 mariadb -e 'select 1' || die "MariaDB did not start"
  fi
  mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
  cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
CONF
  chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf
  if ! alive "$DIR/run/slurmdbd.pid" slurmdbd; then
    /usr/sbin/slurmdbd
    until_ok 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819' || die "slurmdbd did not start"
  fi
fi

if alive "$DIR/run/slurmctld.pid" slurmctld; then
  scontrol reconfigure
else
  /usr/sbin/slurmctld -c   # -c: forget jobs of an earlier run
  until_ok 30 bash -c 'scontrol ping | grep -q UP' || die "slurmctld did not start"
fi
alive "$DIR/run/slurmd.pid" slurmd || /usr/sbin/slurmd
idle() { [[ $(sinfo -h -n "$node" -o %t) =~ ^(idle|mix|alloc)$ ]]; }
if ! until_ok 30 idle; then
  scontrol update nodename="$node" state=resume || true
  until_ok 15 idle || die "node $node is not idle"
fi
if [[ $ACCOUNTING == 1 ]]; then
  until_ok 30 bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER" ||
    die "cluster not registered in slurmdbd"
fi
say "SLURM is up in $((SECONDS - started)) s (node $node, logs in $DIR/log); stop with tools/local-slurm/stop.sh"
