"""Per loop: edge error vs GT (mm, mrad) and whitened; odometry step errors vs GT; VO/final ATE."""
import sys, glob, logging
sys.path.insert(0, __import__("os").path.dirname(__file__))
from replay import *
logging.basicConfig(level=logging.ERROR)
for p in sorted(glob.glob(sys.argv[1])):
    rec = load(p)
    r = replay(rec)
    gt = r["gt"]
    oe = odometry_errors(rec, gt)
    print(f"== {p.split('/')[-1]} VO {1e3*r['vo']:.2f} final {1e3*r['final']:.2f} loops {r['loops']} false {r['false']} rejected {r['rejected']} live {rec.get('live')}")
    if len(oe):
        print(f"   odom steps {len(oe)}: rot err median {1e3*np.median(oe[:,0]):.2f} mrad p90 {1e3*np.percentile(oe[:,0],90):.2f}; "
              f"trans err median {1e3*np.median(oe[:,1]):.2f} mm p90 {1e3*np.percentile(oe[:,1],90):.2f}; step median {np.median(oe[:,2]):.3f} m {np.median(oe[:,3]):.2f} deg")
    for e in r["edges"]:
        err, G = loop_edge_error(r, e)
        sd = 1/np.sqrt(np.diag(e.information))
        print(f"   loop {e.query_id:4d}->{e.match_id:4d} inl {e.inliers:3d} rmse {e.rmse_px:.2f}px  err rot {1e3*np.linalg.norm(err[:3]):5.2f} mrad trans {1e3*np.linalg.norm(err[3:]):5.2f} mm "
              f"chi2 {err@e.information@err:8.1f}  sd rot {1e3*sd[:3].mean():.2f} mrad trans {1e3*sd[3:].mean():.2f} mm  dist {np.linalg.norm(G[:3,3]):.2f} m")
    # odometry error growth over k keyframe steps (rotation mrad, translation mm), median over start points
    kfs = [k for k in rec["keyframes"] if k.map_id == rec["keyframes"][0].map_id]
    row = []
    for k in (1, 4, 16, 64):
        es = []
        for a in range(0, len(kfs) - k, max(1, k // 4)):
            A, B = kfs[a], kfs[a + k]
            Z = np.linalg.inv(A.T_world_body) @ B.T_world_body
            G = np.linalg.inv(gt_pose(gt, A.stamp_ns)) @ gt_pose(gt, B.stamp_ns)
            e = se3_log(np.linalg.inv(G) @ Z)
            es.append((np.linalg.norm(e[:3]), np.linalg.norm(e[3:]), np.linalg.norm(G[:3, 3])))
        if es:
            es = np.array(es)
            row.append(f"k={k}: {1e3*np.sqrt(np.mean(es[:,0]**2)):.2f}mrad {1e3*np.sqrt(np.mean(es[:,1]**2)):.2f}mm over {np.mean(es[:,2]):.2f}m")
    print("   odom rms err growth:", "; ".join(row))
