# What docs/SETUP.md copies into the model repository: the three role/registry/cluster values go
# into repository variables (Settings → Secrets and variables → Actions → Variables), the DVC
# remote into .dvc/config, the MLflow values into infra/helm/mlflow/values.yaml.

output "region" {
  description = "Repository variable AWS_REGION."
  value       = var.region
}

output "train_role_arn" {
  description = "Repository variable WMS_TRAIN_ROLE_ARN: role of train jobs (DVC remote)."
  value       = aws_iam_role.train.arn
}

output "deploy_role_arn" {
  description = "Repository variable WMS_DEPLOY_ROLE_ARN: role of deploy jobs (ECR push, EKS)."
  value       = aws_iam_role.deploy.arn
}

output "ecr_repository_url" {
  description = "Repository variable WMS_ECR_REPOSITORY: where build-image pushes (REGISTRY/NAME)."
  value       = aws_ecr_repository.model.repository_url
}

output "cluster_name" {
  description = "Repository variable WMS_EKS_CLUSTER: `wms deploy --eks-cluster`."
  value       = aws_eks_cluster.this.name
}

output "dvc_remote_url" {
  description = "The model repository's DVC remote: `dvc remote modify storage url <this>`."
  value       = "s3://${aws_s3_bucket.data["dvc"].id}/dvc"
}

output "dvc_bucket" {
  description = "Bucket of the DVC remote."
  value       = aws_s3_bucket.data["dvc"].id
}

output "mlflow_artifacts_bucket" {
  description = "MLflow artifact bucket (artifactRoot.s3.bucket in infra/helm/mlflow/values.yaml)."
  value       = aws_s3_bucket.data["mlflow"].id
}

output "mlflow_db_host" {
  description = "MLflow database host (backendStore.mysql.host)."
  value       = aws_db_instance.mlflow.address
}

output "mlflow_db_secret_arn" {
  description = "Secrets Manager secret with the MLflow database's username and password (managed and rotated by RDS)."
  value       = aws_db_instance.mlflow.master_user_secret[0].secret_arn
}

output "mlflow_namespace" {
  description = "Namespace the MLflow release must be installed in (its Pod Identity association names it)."
  value       = var.mlflow_namespace
}

output "mlflow_role_arn" {
  description = "Role the MLflow service account gets through EKS Pod Identity."
  value       = aws_iam_role.mlflow.arn
}

output "kms_key_arn" {
  description = "The stack's KMS key (S3, ECR, RDS, EKS secrets, logs)."
  value       = aws_kms_key.wms.arn
}

output "github_oidc_provider_arn" {
  description = "The GitHub OIDC provider the roles trust."
  value       = local.github_oidc_provider_arn
}

output "github_variables" {
  description = "All repository variables at once: `terraform output -json github_variables`."
  value = {
    AWS_REGION          = var.region
    WMS_TRAIN_ROLE_ARN  = aws_iam_role.train.arn
    WMS_DEPLOY_ROLE_ARN = aws_iam_role.deploy.arn
    WMS_ECR_REPOSITORY  = aws_ecr_repository.model.repository_url
    WMS_EKS_CLUSTER     = aws_eks_cluster.this.name
  }
}
